"""AFFormer, the adaptive frequency filter transformer (Dong et al., AAAI 2023, arXiv:2301.04648), as a transformers
backbone.

Written to compute what the official AFFormer code computes (as the SSA code uses it), with names that say what each
layer is; `ssa_hf.convert` maps the official names onto these. The official code gives every attention layer its own
reference to the encoder's shared position encoding and frequency filter (so each appears once per layer in its state
dict); here the encoder owns them once and hands them to its layers.

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

from .configuration_afformer import AFFormerConfig
from .ops_ssa import DropPath, adaptive_avg_pool

# How much the second patch embedding of each stage strides: stages 3 and 4 attend at a coarser grid.
ATTENTION_STRIDES = (1, 1, 2, 4)


class AFFormerConvNorm(nn.Module):
    """Convolution without bias, batch norm, and Hardswish unless `activation=False`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, eps: float = 1e-5,
                 activation: bool = True):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels, eps=eps)
        self.activation = nn.Hardswish() if activation else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(hidden_states)))


class AFFormerPatchEmbedding(nn.Module):
    """A depth-wise 3x3 convolution (strided), a pointwise convolution, batch norm and Hardswish."""

    def __init__(self, channels: int, stride: int, eps: float):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.normalization = nn.BatchNorm2d(channels, eps=eps)
        self.activation = nn.Hardswish()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.pointwise(self.depthwise(hidden_states))))


class AFFormerRestore(nn.Module):
    """The convolutional branch: x + expand(Hardswish(BN(depth-wise 3x3(reduce(x))))), reduce halving the channels."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        hidden = channels // 2
        self.reduce = AFFormerConvNorm(channels, hidden, eps=eps)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.normalization = nn.BatchNorm2d(hidden, eps=eps)
        self.activation = nn.Hardswish()
        self.expand = AFFormerConvNorm(hidden, channels, eps=eps, activation=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        restored = self.activation(self.normalization(self.depthwise(self.reduce(hidden_states))))
        return hidden_states + self.expand(restored)


class AFFormerFrequencyFilter(nn.Module):
    """The adaptive frequency filter that takes the place of a relative position term: a high-pass part (depth-wise
    convolutions of the values, each kernel size on its own group of heads) gated by the queries, plus a low-pass part
    (each quarter of the value channels average-pooled to a small grid, upsampled back, ReLU)."""

    def __init__(self, config: AFFormerConfig, channels: int):
        super().__init__()
        head_channels = channels // config.num_attention_heads
        self.high_pass_channels = [heads * head_channels for heads in config.filter_head_splits]
        self.high_pass = nn.ModuleList(
            nn.Conv2d(width, width, kernel, padding=kernel // 2, groups=width)
            for width, kernel in zip(self.high_pass_channels, config.filter_kernel_sizes))
        self.low_pass_sizes = list(config.low_pass_sizes)

    def low_pass(self, values: torch.Tensor) -> torch.Tensor:
        size = values.shape[2:]
        groups = values.chunk(len(self.low_pass_sizes), dim=1)
        return F.relu(torch.cat([
            F.interpolate(adaptive_avg_pool(group, grid), size=size, mode="bilinear", align_corners=False)
            for group, grid in zip(groups, self.low_pass_sizes)], dim=1))

    def forward(self, queries: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, heads, N, C_h) queries and values on an (H, W) grid -> the filter term, (B, heads, N, C_h)."""
        batch, heads, _, head_channels = values.shape
        image = values.transpose(2, 3).reshape(batch, heads * head_channels, *size)  # heads-major channels
        high = torch.cat([conv(part) for conv, part in zip(self.high_pass, image.split(self.high_pass_channels, 1))],
                         dim=1)

        def as_heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, heads, head_channels, -1).transpose(2, 3)

        return queries * as_heads(high) + as_heads(self.low_pass(image))


class AFFormerAttention(nn.Module):
    """Linear (factorised) attention: q (softmax_N(k)^T v) scaled by head_dim^-1/2, plus the frequency filter."""

    def __init__(self, config: AFFormerConfig, channels: int):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.scale = (channels // self.num_heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels)
        self.projection = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor, size: tuple[int, int],
                frequency_filter: AFFormerFrequencyFilter) -> torch.Tensor:
        batch, tokens, channels = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        queries, keys, values = qkv.unbind(0)
        context = keys.softmax(dim=2).transpose(2, 3) @ values  # (B, heads, C_h, C_h): linear in N
        attended = self.scale * (queries @ context) + frequency_filter(queries, values, size)
        return self.projection(attended.transpose(1, 2).reshape(batch, tokens, channels))


class AFFormerMlp(nn.Module):
    """fc1, then GELU of its output plus a depth-wise 3x3 convolution of it, then fc2."""

    def __init__(self, config: AFFormerConfig, channels: int, hidden_channels: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden_channels)
        self.depthwise = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1, groups=hidden_channels)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden_channels, channels)

    def forward(self, hidden_states: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        image = hidden_states.transpose(1, 2).unflatten(2, size)
        return self.fc2(self.activation(hidden_states + self.depthwise(image).flatten(2).transpose(1, 2)))


class AFFormerLayer(nn.Module):
    """x + pos(x), then x + drop_path(attention(LN(x))), then x + drop_path(mlp(LN(x))), on (B, N, C) tokens."""

    def __init__(self, config: AFFormerConfig, channels: int, drop_path: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(channels, eps=config.layer_norm_eps)
        self.attention = AFFormerAttention(config, channels)
        self.mlp_norm = nn.LayerNorm(channels, eps=config.layer_norm_eps)
        self.mlp = AFFormerMlp(config, channels, channels * config.mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor, size: tuple[int, int], position_encoding: nn.Conv2d,
                frequency_filter: AFFormerFrequencyFilter) -> torch.Tensor:
        image = hidden_states.transpose(1, 2).unflatten(2, size)
        hidden_states = (position_encoding(image) + image).flatten(2).transpose(1, 2)
        attention = self.attention(self.attention_norm(hidden_states), size, frequency_filter)
        hidden_states = hidden_states + self.drop_path(attention)
        return hidden_states + self.drop_path(self.mlp(self.mlp_norm(hidden_states), size))


class AFFormerEncoder(nn.Module):
    """The attention layers of a stage, sharing one convolutional position encoding (a depth-wise 3x3 convolution,
    added to the tokens before every layer) and one frequency filter."""

    def __init__(self, config: AFFormerConfig, channels: int, drop_paths: list[float]):
        super().__init__()
        self.position_encoding = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.frequency_filter = AFFormerFrequencyFilter(config, channels)
        self.layers = nn.ModuleList(AFFormerLayer(config, channels, rate) for rate in drop_paths)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        size = hidden_states.shape[2:]
        tokens = hidden_states.flatten(2).transpose(1, 2)
        for layer in self.layers:
            tokens = layer(tokens, size, self.position_encoding, self.frequency_filter)
        return tokens.transpose(1, 2).unflatten(2, size)


class AFFormerStage(nn.Module):
    """Two chained patch embeddings; the first's output goes through the restore branch, the second's (from stage 2
    on) through the attention layers, upsampled back when its embedding strided; their sum (in stage 1, the restore
    branch of the two embeddings' sum) is aggregated by a 1x1 conv + BN + Hardswish to the next stage's width."""

    def __init__(self, config: AFFormerConfig, index: int, drop_paths: list[float]):
        super().__init__()
        channels, eps = config.hidden_sizes[index], config.batch_norm_eps
        out_channels = config.hidden_sizes[min(index + 1, len(config.hidden_sizes) - 1)]
        self.attention_stride = ATTENTION_STRIDES[index]
        self.patch_embeddings = nn.ModuleList([
            AFFormerPatchEmbedding(channels, 2 if index == 1 else 1, eps),
            AFFormerPatchEmbedding(channels, self.attention_stride, eps)])
        self.restore = AFFormerRestore(channels, eps)
        self.encoder = AFFormerEncoder(config, channels, drop_paths) if index > 0 else None
        self.aggregate = AFFormerConvNorm(channels, out_channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        local = self.patch_embeddings[0](hidden_states)
        coarse = self.patch_embeddings[1](local)
        if self.encoder is None:
            return self.aggregate(self.restore(local + coarse))
        attended = self.encoder(coarse)
        if self.attention_stride > 1:
            attended = F.interpolate(attended, size=local.shape[2:], mode="bilinear", align_corners=True)
        return self.aggregate(self.restore(local) + attended)


class AFFormerPreTrainedModel(PreTrainedModel):
    """The transformers base of AFFormer models: `AFFormerConfig` and the official initialisation."""

    config_class = AFFormerConfig
    config: AFFormerConfig
    base_model_prefix = "afformer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The official init: convolutions N(0, 2 / (k*k*out/groups)) with zero bias, norms 1 and 0, linear layers
        truncated N(0, 0.02^2) with zero bias."""
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            init.normal_(module.weight, std=math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)


class AFFormerBackbone(BackboneMixin, AFFormerPreTrainedModel):
    """AFFormer's feature maps at strides 4, 8, 8 and 8 (those named by `config.out_features`); the SSA head reads
    the last one.

    Example:

    ```python
    >>> import torch
    >>> from ssa_hf import AFFormerBackbone, AFFormerConfig

    >>> backbone = AFFormerBackbone(AFFormerConfig.from_variant("base")).eval()
    >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 64, 64)).feature_maps]
    [(1, 96, 16, 16), (1, 176, 8, 8), (1, 216, 8, 8), (1, 216, 8, 8)]

    ```
    """

    has_attentions = False

    def __init__(self, config: AFFormerConfig):
        super().__init__(config)
        width, eps = config.hidden_sizes[0], config.batch_norm_eps
        self.stem = nn.Sequential(AFFormerConvNorm(config.num_channels, width // 2, 3, 2, eps),
                                  AFFormerConvNorm(width // 2, width, 3, 2, eps))
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        starts = [sum(config.depths[:index]) for index in range(len(config.depths))]
        self.stages = nn.ModuleList(AFFormerStage(config, index, rates[start : start + depth])
                                    for index, (start, depth) in enumerate(zip(starts, config.depths)))
        self.num_features = [width] + list(config.hidden_sizes[1:]) + [config.hidden_sizes[-1]]
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None, **kwargs) -> BackboneOutput:
        """
        Args:
            pixel_values: (B, C, H, W) images.
            output_hidden_states: also return the stem's output and every stage's.
            output_attentions: unused.
            return_dict: a `BackboneOutput` rather than a tuple.

        Returns:
            `BackboneOutput`: `feature_maps`, one (B, C_i, H_i, W_i) map per entry of `out_features`.
        """
        hidden_states = self.stem(pixel_values)
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


__all__ = ["AFFormerBackbone", "AFFormerPreTrainedModel"]
