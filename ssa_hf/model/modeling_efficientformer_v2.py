"""EfficientFormerV2 (Li et al., ICCV 2023, arXiv:2212.08059) in CGRSeg's segmentation form, as a transformers
backbone: the encoder of CGRSeg (Ni et al., ECCV 2024).

Written to compute what CGRSeg's official backbone computes: its attentions add relative-position biases from tables
built for a 512x512 input, bicubically resized to the real size; those are the biases it trains (the ImageNet biases of
the classification model are not used). Names say what each layer is; `ssa_hf.convert` maps the official ones.

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .configuration_efficientformer_v2 import EfficientFormerV2Config
from .ops_ssa import DropPath


class EfficientFormerV2ConvNorm(nn.Sequential):
    """A convolution (with bias, as the official code) and its batch norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 eps: float = 1e-5):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups)
        self.normalization = nn.BatchNorm2d(out_channels, eps=eps)


def relative_offsets(query_side: int, key_side: int) -> torch.Tensor:
    """(Nq, Nk) index of the (|dy|, |dx|) offset between each query cell of a `query_side` grid (spread over the key
    grid with step key_side / query_side, rounded up) and each key cell, in order of first appearance."""
    step = math.ceil(key_side / query_side)
    offsets, indices = {}, []
    for qy, qx in itertools.product(range(query_side), range(query_side)):
        for ky, kx in itertools.product(range(key_side), range(key_side)):
            offset = (abs(qy * step - ky), abs(qx * step - kx))
            indices.append(offsets.setdefault(offset, len(offsets)))
    return torch.tensor(indices, device="cpu").view(query_side**2, key_side**2)  # real even when built on "meta"


class EfficientFormerV2RelativeBias(nn.Module):
    """Learned per-head biases of each relative offset on a fixed grid (`biases`, indexed by `indices`), resized
    bicubically to the attention map's real (Nq, Nk)."""

    def __init__(self, num_heads: int, query_side: int, key_side: int):
        super().__init__()
        indices = relative_offsets(query_side, key_side)
        self.biases = nn.Parameter(torch.zeros(num_heads, int(indices.max()) + 1))
        self.register_buffer("indices", indices)

    def forward(self, num_queries: int, num_keys: int) -> torch.Tensor:
        table = self.biases[:, self.indices]  # (heads, Nq_fixed, Nk_fixed)
        return F.interpolate(table[None], size=(num_queries, num_keys), mode="bicubic", align_corners=False)


class EfficientFormerV2Attention(nn.Module):
    """Multi-head attention of a block: queries, keys and values by 1x1 conv + BN, talking heads before and after the
    softmax, the relative-position biases, a 3x3 depth-wise local branch on the values, and a projection. With
    `stride` (stage 3) it attends on a stride-2 depth-wise downsampling and upsamples the result to the input's size
    (the official code doubles it, the same on even sides, and fails on odd ones)."""

    def __init__(self, config: EfficientFormerV2Config, channels: int, resolution: int, stride: int | None):
        super().__init__()
        heads, key_dim, eps = config.num_attention_heads, config.key_dim, config.batch_norm_eps
        self.num_heads, self.scale = heads, key_dim**-0.5
        if stride is not None:
            resolution = math.ceil(resolution / stride)
            self.downsample = EfficientFormerV2ConvNorm(channels, channels, 3, stride, groups=channels, eps=eps)
        else:
            self.downsample = None
        value_channels = config.attention_ratio * key_dim * heads
        self.value_channels = value_channels
        self.query = EfficientFormerV2ConvNorm(channels, heads * key_dim, eps=eps)
        self.key = EfficientFormerV2ConvNorm(channels, heads * key_dim, eps=eps)
        self.value = EfficientFormerV2ConvNorm(channels, value_channels, eps=eps)
        self.value_local = EfficientFormerV2ConvNorm(value_channels, value_channels, 3, groups=value_channels, eps=eps)
        self.talking_head_before_softmax = nn.Conv2d(heads, heads, 1)
        self.talking_head_after_softmax = nn.Conv2d(heads, heads, 1)
        self.activation = ACT2FN[config.hidden_act]
        self.projection = EfficientFormerV2ConvNorm(value_channels, channels, eps=eps)
        self.relative_bias = EfficientFormerV2RelativeBias(heads, resolution, resolution)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        size = hidden_states.shape[2:]
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states)
        batch, _, height, width = hidden_states.shape
        length = height * width
        query = self.query(hidden_states).reshape(batch, self.num_heads, -1, length).transpose(2, 3)
        key = self.key(hidden_states).reshape(batch, self.num_heads, -1, length)
        value = self.value(hidden_states)
        local = self.value_local(value)
        value = value.reshape(batch, self.num_heads, -1, length).transpose(2, 3)
        scores = torch.matmul(query, key) * self.scale
        scores = scores + self.relative_bias(length, length)
        weights = self.talking_head_after_softmax(self.talking_head_before_softmax(scores).softmax(dim=-1))
        output = torch.matmul(weights, value).transpose(2, 3).reshape(batch, self.value_channels, height, width)
        output = output + local
        if self.downsample is not None:
            output = F.interpolate(output, size=size, mode="bilinear", align_corners=False)
        return self.projection(self.activation(output))


class EfficientFormerV2Mlp(nn.Module):
    """1x1 conv + BN + act, 3x3 depth-wise conv + BN + act, 1x1 conv + BN."""

    def __init__(self, config: EfficientFormerV2Config, channels: int, hidden_channels: int):
        super().__init__()
        eps = config.batch_norm_eps
        self.expand = EfficientFormerV2ConvNorm(channels, hidden_channels, eps=eps)
        self.depthwise = EfficientFormerV2ConvNorm(hidden_channels, hidden_channels, 3, groups=hidden_channels,
                                                   eps=eps)
        self.activation = ACT2FN[config.hidden_act]
        self.project = EfficientFormerV2ConvNorm(hidden_channels, channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation(self.expand(hidden_states))
        return self.project(self.activation(self.depthwise(hidden_states)))


class EfficientFormerV2Block(nn.Module):
    """[x + drop_path(scale_1 * attention(x))], then x + drop_path(scale_2 * mlp(x))."""

    def __init__(self, config: EfficientFormerV2Config, channels: int, mlp_ratio: float, drop_path: float,
                 attention: dict | None):
        super().__init__()
        shape = (channels, 1, 1)
        if attention is not None:
            self.attention = EfficientFormerV2Attention(config, channels, **attention)
            self.attention_scale = nn.Parameter(torch.full(shape, config.layer_scale_init_value))
        else:
            self.attention = self.attention_scale = None
        self.mlp = EfficientFormerV2Mlp(config, channels, int(channels * mlp_ratio))
        self.mlp_scale = nn.Parameter(torch.full(shape, config.layer_scale_init_value))
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            hidden_states = hidden_states + self.drop_path(self.attention_scale * self.attention(hidden_states))
        return hidden_states + self.drop_path(self.mlp_scale * self.mlp(hidden_states))


class EfficientFormerV2LocalGlobalQuery(nn.Module):
    """The downsampling attention's queries: a stride-2 depth-wise conv plus the stride-2 subsampled input, then
    1x1 conv + BN."""

    def __init__(self, in_channels: int, out_channels: int, eps: float):
        super().__init__()
        self.local = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels)
        self.projection = EfficientFormerV2ConvNorm(in_channels, out_channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.projection(self.local(hidden_states) + hidden_states[:, :, ::2, ::2])


class EfficientFormerV2DownsampleAttention(nn.Module):
    """Attention from a stride-2 grid of queries to every key, with relative-position biases, a stride-2 local value
    branch, and a projection to the next stage's width."""

    def __init__(self, config: EfficientFormerV2Config, channels: int, out_channels: int, resolution: int):
        super().__init__()
        heads, key_dim, eps = config.num_attention_heads, config.downsample_key_dim, config.batch_norm_eps
        self.num_heads, self.scale = heads, key_dim**-0.5
        value_channels = config.attention_ratio * key_dim * heads
        self.value_channels = value_channels
        self.query = EfficientFormerV2LocalGlobalQuery(channels, heads * key_dim, eps)
        self.key = EfficientFormerV2ConvNorm(channels, heads * key_dim, eps=eps)
        self.value = EfficientFormerV2ConvNorm(channels, value_channels, eps=eps)
        self.value_local = EfficientFormerV2ConvNorm(value_channels, value_channels, 3, 2, groups=value_channels,
                                                     eps=eps)
        self.activation = ACT2FN[config.hidden_act]
        self.projection = EfficientFormerV2ConvNorm(value_channels, out_channels, eps=eps)
        self.relative_bias = EfficientFormerV2RelativeBias(heads, math.ceil(resolution / 2), resolution)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = hidden_states.shape
        length = height * width
        query = self.query(hidden_states)  # on the stride-2 grid: ceil(H/2) x ceil(W/2)
        out_size = query.shape[2:]
        query = query.flatten(2).reshape(batch, self.num_heads, -1, out_size[0] * out_size[1]).transpose(2, 3)
        key = self.key(hidden_states).reshape(batch, self.num_heads, -1, length)
        value = self.value(hidden_states)
        local = self.value_local(value)
        value = value.reshape(batch, self.num_heads, -1, length).transpose(2, 3)
        scores = torch.matmul(query, key) * self.scale
        weights = (scores + self.relative_bias(scores.shape[-2], length)).softmax(dim=-1)
        output = torch.matmul(weights, value).transpose(2, 3).reshape(batch, self.value_channels, *out_size)
        return self.projection(self.activation(output + local))


class EfficientFormerV2Downsample(nn.Module):
    """Between stages: a stride-2 3x3 conv + BN, plus (before the last stage) the downsampling attention."""

    def __init__(self, config: EfficientFormerV2Config, in_channels: int, out_channels: int, resolution: int | None):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.normalization = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps)
        self.attention = EfficientFormerV2DownsampleAttention(config, in_channels, out_channels, resolution) \
            if resolution is not None else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.normalization(self.convolution(hidden_states))
        return output if self.attention is None else self.attention(hidden_states) + output


class EfficientFormerV2Stem(nn.Module):
    """Two stride-2 3x3 convolutions, each with batch norm and the activation: the image at stride 4."""

    def __init__(self, config: EfficientFormerV2Config):
        super().__init__()
        channels, eps = config.hidden_sizes[0], config.batch_norm_eps
        self.convolution1 = nn.Conv2d(config.num_channels, channels // 2, 3, 2, 1)
        self.normalization1 = nn.BatchNorm2d(channels // 2, eps=eps)
        self.convolution2 = nn.Conv2d(channels // 2, channels, 3, 2, 1)
        self.normalization2 = nn.BatchNorm2d(channels, eps=eps)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation(self.normalization1(self.convolution1(pixel_values)))
        return self.activation(self.normalization2(self.convolution2(hidden_states)))


class EfficientFormerV2Stage(nn.Module):
    """A downsampling from the previous stage (none in the first) and the stage's blocks."""

    def __init__(self, config: EfficientFormerV2Config, index: int, drop_paths: list[float]):
        super().__init__()
        channels = config.hidden_sizes[index]
        resolution = math.ceil(config.resolution / 2 ** (index + 2))  # the bias tables' grid side at this stage
        self.downsample = None if index == 0 else EfficientFormerV2Downsample(
            config, config.hidden_sizes[index - 1], channels,
            math.ceil(config.resolution / 2 ** (index + 1)) if index == 3 else None)
        first_attention = config.depths[index] - config.num_attention_blocks
        blocks = []
        for position, (ratio, rate) in enumerate(zip(config.mlp_ratios[index], drop_paths)):
            attention = None
            if index >= 2 and position >= first_attention:
                attention = {"resolution": resolution, "stride": 2 if index == 2 else None}
            blocks.append(EfficientFormerV2Block(config, channels, ratio, rate, attention))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states)
        return self.blocks(hidden_states)


class EfficientFormerV2PreTrainedModel(PreTrainedModel):
    """The transformers base of EfficientFormerV2 models: its config and the official initialisation."""

    config_class = EfficientFormerV2Config
    config: EfficientFormerV2Config
    base_model_prefix = "efficientformer_v2"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Convolutions truncated N(0, 0.02^2) with zero bias (the official MLPs'; PyTorch's default elsewhere in the
        official code), batch norms 1 and 0, layer scales `layer_scale_init_value`, position biases 0."""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
        elif isinstance(module, EfficientFormerV2Block):
            for scale in (module.attention_scale, module.mlp_scale):
                if scale is not None:
                    init.constant_(scale, self.config.layer_scale_init_value)
        elif isinstance(module, EfficientFormerV2RelativeBias):
            init.zeros_(module.biases)


class EfficientFormerV2Backbone(BackboneMixin, EfficientFormerV2PreTrainedModel):
    """EfficientFormerV2's feature maps at strides 4, 8, 16 and 32 (those named by `config.out_features`). With
    `config.frozen_batch_norm` its batch norms stay in eval mode when the model trains.

    Example:

    ```python
    >>> import torch
    >>> from ssa_hf import EfficientFormerV2Backbone, EfficientFormerV2Config

    >>> backbone = EfficientFormerV2Backbone(EfficientFormerV2Config.from_variant("s2")).eval()
    >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 128, 128)).feature_maps]
    [(1, 32, 32, 32), (1, 64, 16, 16), (1, 144, 8, 8), (1, 288, 4, 4)]

    ```
    """

    has_attentions = False

    def __init__(self, config: EfficientFormerV2Config):
        super().__init__(config)
        self.stem = EfficientFormerV2Stem(config)
        rates = [config.drop_path_rate * i / max(sum(config.depths) - 1, 1) for i in range(sum(config.depths))]
        starts = [sum(config.depths[:index]) for index in range(len(config.depths))]
        self.stages = nn.ModuleList(EfficientFormerV2Stage(config, index, rates[start : start + depth])
                                    for index, (start, depth) in enumerate(zip(starts, config.depths)))
        self.num_features = [config.hidden_sizes[0]] + list(config.hidden_sizes)
        self.post_init()

    def train(self, mode: bool = True):
        """`nn.Module.train`; with `config.frozen_batch_norm` the batch norms stay in eval mode."""
        super().train(mode)
        if mode and self.config.frozen_batch_norm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):  # SyncBatchNorm too
                    module.eval()
        return self

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


__all__ = ["EfficientFormerV2Backbone", "EfficientFormerV2PreTrainedModel", "relative_offsets"]
