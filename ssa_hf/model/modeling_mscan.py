"""MSCAN, SegNeXt's multi-scale convolutional attention encoder (Guo et al., NeurIPS 2022, arXiv:2209.08575), as a
transformers backbone.

Written to compute what the official MSCAN code computes (as the SSA code uses it), with names that say what each layer
is; `ssa_hf.convert` maps the official names onto these.

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .configuration_mscan import MSCANConfig
from .ops_ssa import DropPath


class MSCANStem(nn.Module):
    """Two stride-2 3x3 convolutions with batch norm, GELU between them: the image at stride 4."""

    def __init__(self, config: MSCANConfig, out_channels: int):
        super().__init__()
        eps = config.batch_norm_eps
        self.convolution1 = nn.Conv2d(config.num_channels, out_channels // 2, 3, 2, 1)
        self.normalization1 = nn.BatchNorm2d(out_channels // 2, eps=eps)
        self.activation = ACT2FN[config.hidden_act]
        self.convolution2 = nn.Conv2d(out_channels // 2, out_channels, 3, 2, 1)
        self.normalization2 = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation(self.normalization1(self.convolution1(pixel_values)))
        return self.normalization2(self.convolution2(hidden_states))


class MSCANPatchEmbedding(nn.Module):
    """A stride-2 3x3 convolution and batch norm, between stages."""

    def __init__(self, in_channels: int, out_channels: int, eps: float):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.normalization = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.normalization(self.convolution(hidden_states))


class MSCANMultiScaleAttention(nn.Module):
    """Multi-scale convolutional attention: a 5x5 depth-wise convolution, three branches of depth-wise strip
    convolutions (1xk then kx1, k = 7, 11, 21) added to it, a 1x1 mix, and the result multiplies the input."""

    STRIP_LENGTHS = (7, 11, 21)

    def __init__(self, channels: int):
        super().__init__()
        self.local = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.strips = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, (1, length), padding=(0, length // 2), groups=channels),
                          nn.Conv2d(channels, channels, (length, 1), padding=(length // 2, 0), groups=channels))
            for length in self.STRIP_LENGTHS)
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        local = self.local(hidden_states)
        attention = local
        for strip in self.strips:  # in the official order: local + 7 + 11 + 21
            attention = attention + strip(local)
        return self.mix(attention) * hidden_states


class MSCANSpatialAttention(nn.Module):
    """1x1 projection, GELU, multi-scale convolutional attention, 1x1 projection, plus the input."""

    def __init__(self, config: MSCANConfig, channels: int):
        super().__init__()
        self.input_projection = nn.Conv2d(channels, channels, 1)
        self.activation = ACT2FN[config.hidden_act]
        self.gating = MSCANMultiScaleAttention(channels)
        self.output_projection = nn.Conv2d(channels, channels, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gated = self.gating(self.activation(self.input_projection(hidden_states)))
        return self.output_projection(gated) + hidden_states


class MSCANMlp(nn.Module):
    """1x1 expansion, depth-wise 3x3 convolution, GELU, 1x1 projection (all with bias)."""

    def __init__(self, config: MSCANConfig, channels: int, hidden_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden_channels, 1)
        self.depthwise = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1, groups=hidden_channels)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Conv2d(hidden_channels, channels, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.depthwise(self.fc1(hidden_states))))


class MSCANBlock(nn.Module):
    """x + drop_path(scale_1 * attention(BN(x))), then x + drop_path(scale_2 * mlp(BN(x)))."""

    def __init__(self, config: MSCANConfig, channels: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.attention_norm = nn.BatchNorm2d(channels, eps=config.batch_norm_eps)
        self.attention = MSCANSpatialAttention(config, channels)
        self.attention_scale = nn.Parameter(torch.full((channels,), config.layer_scale_init_value))
        self.mlp_norm = nn.BatchNorm2d(channels, eps=config.batch_norm_eps)
        self.mlp = MSCANMlp(config, channels, int(channels * mlp_ratio))
        self.mlp_scale = nn.Parameter(torch.full((channels,), config.layer_scale_init_value))
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        attention = self.attention(self.attention_norm(hidden_states))
        hidden_states = hidden_states + self.drop_path(self.attention_scale[:, None, None] * attention)
        mlp = self.mlp(self.mlp_norm(hidden_states))
        return hidden_states + self.drop_path(self.mlp_scale[:, None, None] * mlp)


class MSCANStage(nn.Module):
    """Patch embedding (the stem in the first stage), blocks, and a layer norm over the channels of every pixel."""

    def __init__(self, config: MSCANConfig, index: int, drop_paths: list[float]):
        super().__init__()
        channels = config.hidden_sizes[index]
        self.patch_embedding = MSCANStem(config, channels) if index == 0 else MSCANPatchEmbedding(
            config.hidden_sizes[index - 1], channels, config.batch_norm_eps)
        self.blocks = nn.ModuleList(MSCANBlock(config, channels, config.mlp_ratios[index], rate)
                                    for rate in drop_paths)
        self.layer_norm = nn.LayerNorm(channels, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The blocks and the layer norm, on the output of `patch_embedding` (which the backbone calls first, so
        that the stem's output is a hidden state of its own)."""
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return self.layer_norm(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MSCANPreTrainedModel(PreTrainedModel):
    """The transformers base of MSCAN models: `MSCANConfig` and the official initialisation."""

    config_class = MSCANConfig
    config: MSCANConfig
    base_model_prefix = "mscan"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The official init: convolutions N(0, 2 / (k*k*out/groups)) with zero bias, norms 1 and 0, linear layers
        truncated N(0, 0.02^2); layer scales `layer_scale_init_value`."""
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
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MSCANBlock):
            init.constant_(module.attention_scale, self.config.layer_scale_init_value)
            init.constant_(module.mlp_scale, self.config.layer_scale_init_value)


class MSCANBackbone(BackboneMixin, MSCANPreTrainedModel):
    """MSCAN's feature maps at strides 4, 8, 16 and 32 (those named by `config.out_features`).

    Example:

    ```python
    >>> import torch
    >>> from ssa_hf import MSCANBackbone, MSCANConfig

    >>> backbone = MSCANBackbone(MSCANConfig.from_variant("tiny")).eval()
    >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 64, 64)).feature_maps]
    [(1, 32, 16, 16), (1, 64, 8, 8), (1, 160, 4, 4), (1, 256, 2, 2)]

    ```
    """

    has_attentions = False

    def __init__(self, config: MSCANConfig):
        super().__init__(config)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        starts = [sum(config.depths[:index]) for index in range(len(config.depths))]
        self.stages = nn.ModuleList(MSCANStage(config, index, rates[start : start + depth])
                                    for index, (start, depth) in enumerate(zip(starts, config.depths)))
        self.num_features = [config.hidden_sizes[0]] + list(config.hidden_sizes)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None, **kwargs) -> BackboneOutput:
        """
        Args:
            pixel_values: (B, C, H, W) images.
            output_hidden_states: also return the stem's output and every stage's.
            output_attentions: unused (MSCAN returns no attention maps).
            return_dict: a `BackboneOutput` rather than a tuple.

        Returns:
            `BackboneOutput`: `feature_maps`, one (B, C_i, H_i, W_i) map per entry of `out_features`.
        """
        hidden_states, all_hidden_states = pixel_values, []
        for stage in self.stages:
            hidden_states = stage.patch_embedding(hidden_states)
            if not all_hidden_states:  # the first stage's patch embedding is the stem
                all_hidden_states.append(hidden_states)
            hidden_states = stage(hidden_states)
            all_hidden_states.append(hidden_states)
        feature_maps = tuple(state for name, state in zip(self.stage_names, all_hidden_states)
                             if name in self.out_features)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else \
            self.config.output_hidden_states
        output = BackboneOutput(feature_maps=feature_maps,
                                hidden_states=tuple(all_hidden_states) if output_hidden_states else None)
        return output if return_dict is not False else output.to_tuple()


__all__ = ["MSCANBackbone", "MSCANPreTrainedModel"]
