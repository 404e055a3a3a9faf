"""SeaFormer (Wan et al., ICLR 2023, arXiv:2301.13156) as a transformers backbone: a MobileNetV2-style stem and stages
of inverted-residual blocks, the last stages followed by squeeze-enhanced axial attention blocks.

Written to compute what the official SeaFormer code computes (its `SeaFormer` backbone, as the SSA code uses it), with
names that say what each layer is; `ssa_hf.convert` maps the official names onto these.

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .configuration_seaformer import SeaFormerConfig
from .ops_ssa import DropPath


class SeaFormerConvNorm(nn.Sequential):
    """A convolution without bias and its batch norm (the official `Conv2d_BN`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 eps: float = 1e-5):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                     groups=groups, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels, eps=eps)


class SeaFormerInvertedResidual(nn.Module):
    """MobileNetV2's block: a 1x1 expansion (left out when the ratio is 1), a depth-wise k x k convolution that may
    stride, and a linear 1x1 projection, with a residual connection when shape allows."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: float,
                 activation: str, eps: float):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.expand = SeaFormerConvNorm(in_channels, hidden, eps=eps) if expand_ratio != 1 else None
        self.depthwise = SeaFormerConvNorm(hidden, hidden, kernel_size, stride, groups=hidden, eps=eps)
        self.project = SeaFormerConvNorm(hidden, out_channels, eps=eps)
        self.activation = ACT2FN[activation]
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = hidden_states
        if self.expand is not None:
            output = self.activation(self.expand(output))
        output = self.project(self.activation(self.depthwise(output)))
        return hidden_states + output if self.use_residual else output


class SeaFormerAxialPositionEmbedding(nn.Module):
    """A learned position embedding along one axis, `size` long, linearly interpolated to the axis length."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(1, channels, size))

    def forward(self, squeezed: torch.Tensor) -> torch.Tensor:
        """(B, C, N) + the embedding resized to N."""
        return squeezed + F.interpolate(self.embedding, size=squeezed.shape[-1], mode="linear", align_corners=False)


def hard_sigmoid(hidden_states: torch.Tensor) -> torch.Tensor:
    """ReLU6(x + 3) / 6, the gate of the attention's detail branch."""
    return F.relu6(hidden_states + 3) / 6


class SeaFormerSqueezeAxialAttention(nn.Module):
    """Squeeze-enhanced axial attention. Queries, keys and values are squeezed (averaged) over columns and over rows;
    attention along each axis (with its position embeddings) gives a row and a column context, broadcast back over the
    map and added to the values. A detail branch (depth-wise 3x3 and 1x1 convolutions over the concatenated queries,
    keys and values) is gated by the projected context: out = hard_sigmoid(proj(v + rows + columns)) * detail."""

    def __init__(self, config: SeaFormerConfig, channels: int, key_dim: int):
        super().__init__()
        heads, eps = config.num_attention_heads, config.batch_norm_eps
        self.num_heads, self.scale = heads, key_dim**-0.5
        key_channels = key_dim * heads
        value_channels = int(config.attention_ratio * key_dim) * heads
        self.query = SeaFormerConvNorm(channels, key_channels, eps=eps)
        self.key = SeaFormerConvNorm(channels, key_channels, eps=eps)
        self.value = SeaFormerConvNorm(channels, value_channels, eps=eps)
        size = config.position_embedding_size
        self.row_query_position = SeaFormerAxialPositionEmbedding(key_channels, size)
        self.row_key_position = SeaFormerAxialPositionEmbedding(key_channels, size)
        self.column_query_position = SeaFormerAxialPositionEmbedding(key_channels, size)
        self.column_key_position = SeaFormerAxialPositionEmbedding(key_channels, size)
        self.row_projection = SeaFormerConvNorm(value_channels, value_channels, eps=eps)
        self.column_projection = SeaFormerConvNorm(value_channels, value_channels, eps=eps)
        detail_channels = 2 * key_channels + value_channels
        self.detail_depthwise = SeaFormerConvNorm(detail_channels, detail_channels, 3, groups=detail_channels, eps=eps)
        self.detail_pointwise = SeaFormerConvNorm(detail_channels, channels, eps=eps)
        self.output_projection = SeaFormerConvNorm(value_channels, channels, eps=eps)
        self.activation = ACT2FN[config.hidden_act]

    def axial_context(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, query_position,
                      key_position) -> torch.Tensor:
        """Multi-head attention over one axis of squeezed (B, C, N) queries, keys and values -> (B, C_v, N)."""
        batch, _, length = query.shape
        query = query_position(query).view(batch, self.num_heads, -1, length).transpose(2, 3)  # (B, h, N, d)
        key = key_position(key).view(batch, self.num_heads, -1, length)  # (B, h, d, N)
        value = value.view(batch, self.num_heads, -1, length).transpose(2, 3)  # (B, h, N, d_v)
        weights = (torch.matmul(query, key) * self.scale).softmax(dim=-1)
        return torch.matmul(weights, value).transpose(2, 3).reshape(batch, -1, length)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        query, key, value = self.query(hidden_states), self.key(hidden_states), self.value(hidden_states)
        detail = self.detail_pointwise(self.activation(self.detail_depthwise(torch.cat([query, key, value], dim=1))))
        rows = self.axial_context(query.mean(-1), key.mean(-1), value.mean(-1), self.row_query_position,
                                  self.row_key_position)  # (B, C_v, H): each row squeezed over its columns
        columns = self.axial_context(query.mean(-2), key.mean(-2), value.mean(-2), self.column_query_position,
                                     self.column_key_position)  # (B, C_v, W)
        rows = self.row_projection(self.activation(rows[..., None]))  # (B, C_v, H, 1)
        columns = self.column_projection(self.activation(columns[..., None, :]))  # (B, C_v, 1, W)
        context = value + (rows + columns)
        return hard_sigmoid(self.output_projection(self.activation(context))) * detail


class SeaFormerMlp(nn.Module):
    """1x1 expansion with batch norm, depth-wise 3x3 convolution, activation, 1x1 projection with batch norm."""

    def __init__(self, config: SeaFormerConfig, channels: int, hidden_channels: int):
        super().__init__()
        self.expand = SeaFormerConvNorm(channels, hidden_channels, eps=config.batch_norm_eps)
        self.depthwise = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1, groups=hidden_channels)
        self.activation = ACT2FN[config.hidden_act]
        self.project = SeaFormerConvNorm(hidden_channels, channels, eps=config.batch_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.project(self.activation(self.depthwise(self.expand(hidden_states))))


class SeaFormerAttentionBlock(nn.Module):
    """x + drop_path(attention(x)), then x + drop_path(mlp(x))."""

    def __init__(self, config: SeaFormerConfig, channels: int, key_dim: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.attention = SeaFormerSqueezeAxialAttention(config, channels, key_dim)
        self.mlp = SeaFormerMlp(config, channels, int(channels * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.drop_path(self.attention(hidden_states))
        return hidden_states + self.drop_path(self.mlp(hidden_states))


class SeaFormerStage(nn.Module):
    """Inverted-residual blocks, then (in the last stages) squeeze-enhanced axial attention blocks."""

    def __init__(self, config: SeaFormerConfig, in_channels: int, settings: list, attention: dict | None):
        super().__init__()
        blocks = []
        for kernel_size, expand_ratio, out_channels, stride in settings:
            blocks.append(SeaFormerInvertedResidual(in_channels, out_channels, kernel_size, stride, expand_ratio,
                                                    config.block_act, config.batch_norm_eps))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.attention_blocks = nn.ModuleList(
            [SeaFormerAttentionBlock(config, in_channels, attention["key_dim"], attention["mlp_ratio"], rate)
             for rate in attention["drop_path"]] if attention else [])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            hidden_states = block(hidden_states)
        for block in self.attention_blocks:
            hidden_states = block(hidden_states)
        return hidden_states


class SeaFormerPreTrainedModel(PreTrainedModel):
    """The transformers base of SeaFormer models: `SeaFormerConfig` and the official initialisation."""

    config_class = SeaFormerConfig
    config: SeaFormerConfig
    base_model_prefix = "seaformer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The official init: convolutions N(0, 2 / (k*k*out/groups)) with zero bias, batch norms 1 and 0, linear
        layers N(0, 0.01^2); the axial position embeddings N(0, 1)."""
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            init.normal_(module.weight, std=math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, SeaFormerAxialPositionEmbedding):
            init.normal_(module.embedding)


class SeaFormerBackbone(BackboneMixin, SeaFormerPreTrainedModel):
    """SeaFormer's feature maps: by default the stride-8 output of the second stage and the output of every stage
    with attention (`config.out_features`).

    Example:

    ```python
    >>> import torch
    >>> from ssa_hf import SeaFormerBackbone, SeaFormerConfig

    >>> backbone = SeaFormerBackbone(SeaFormerConfig.from_variant("base")).eval()
    >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 256, 256)).feature_maps]
    [(1, 64, 32, 32), (1, 192, 8, 8), (1, 256, 4, 4)]

    ```
    """

    has_attentions = False

    def __init__(self, config: SeaFormerConfig):
        super().__init__(config)
        self.stem = SeaFormerConvNorm(config.num_channels, config.stem_channels, 3, 2, eps=config.batch_norm_eps)
        self.stem_activation = ACT2FN[config.block_act]
        channels = config.stage_channels
        first_attention = len(config.block_settings) - len(config.attention_depths)
        stages = []
        for index, settings in enumerate(config.block_settings):
            attention = None
            if index >= first_attention:
                position = index - first_attention
                depth = config.attention_depths[position]
                attention = {"key_dim": config.key_dims[position], "mlp_ratio": config.mlp_ratios[position],
                             "drop_path": torch.linspace(0, config.drop_path_rate, depth, device="cpu").tolist()}
            stages.append(SeaFormerStage(config, channels[index], settings, attention))
        self.stages = nn.ModuleList(stages)
        self.num_features = channels
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None, **kwargs) -> BackboneOutput:
        """
        Args:
            pixel_values: (B, C, H, W) images.
            output_hidden_states: also return the output of the stem and of every stage.
            output_attentions: unused (SeaFormer returns no attention maps).
            return_dict: a `BackboneOutput` rather than a tuple.

        Returns:
            `BackboneOutput`: `feature_maps`, one (B, C_i, H_i, W_i) map per entry of `out_features`.
        """
        hidden_states = self.stem_activation(self.stem(pixel_values))
        all_hidden_states = [hidden_states]
        for stage in self.stages:
            hidden_states = stage(hidden_states)
            all_hidden_states.append(hidden_states)
        feature_maps = tuple(state for name, state in zip(self.stage_names, all_hidden_states)
                             if name in self.out_features)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else \
            self.config.output_hidden_states
        output = BackboneOutput(feature_maps=feature_maps,
                                hidden_states=tuple(all_hidden_states) if output_hidden_states else None)
        return output if return_dict is not False else output.to_tuple()


__all__ = ["SeaFormerBackbone", "SeaFormerPreTrainedModel"]
