"""SSA-Seg: an encoder (MiT, or any transformers backbone) and a decoder (SegFormer in the transformers or mmseg
layout, or UperNet) whose 1x1 classifier is replaced by the Semantic and Spatial Adaptive classifier (Ma, Ni, Chen,
NeurIPS 2024, arXiv:2405.06525).

Section numbers refer to the project's SSA_SPEC.md. This file and its two siblings are copied next to the weights by
`save_pretrained` (remote code): they depend on torch and transformers only and import each other relatively.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    PreTrainedModel,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SegformerModel,
    UperNetForSemanticSegmentation,
)
from transformers import initialization as init
from transformers.backbone_utils import load_backbone
from transformers.utils import ModelOutput, logging

from .configuration_ssa import SSAConfig
from .loss_ssa import SSALoss, at_least_float32, downsample_labels, float32_region, group_sum, per_class_sums

logger = logging.get_logger(__name__)

_EPS = 1e-12


@dataclass
class SSAClassifierOutput(ModelOutput):
    """Outputs of [`SSAClassifier`]. The teacher fields are set only when labels are given.

    Args:
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Adapted prediction O: cosine similarities of pixel embeddings and adapted prototypes, times the scale.
        coarse_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Coarse mask M of the fixed prototypes (after channel dropout in training).
        teacher_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Prediction Ô of the ground-truth-guided teacher.
        semantic_prototypes, spatial_prototypes (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Student prototypes S_p and P_p.
        teacher_semantic_prototypes, teacher_spatial_prototypes (same shape):
            Teacher prototypes Ŝ_p (shared within an image group) and P̂_p.
        semantic_centres, spatial_centres (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Student centres S_c (SEPA) and P_c (SPPA) before fusion.
        teacher_semantic_centres (`torch.FloatTensor` of shape `(num_groups, num_labels, channels)`):
            Teacher semantic centres Ŝ_c, one set per image group.
        teacher_spatial_centres (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Teacher spatial centres P̂_c.
    """

    logits: torch.FloatTensor | None = None
    coarse_logits: torch.FloatTensor | None = None
    teacher_logits: torch.FloatTensor | None = None
    semantic_prototypes: torch.FloatTensor | None = None
    spatial_prototypes: torch.FloatTensor | None = None
    teacher_semantic_prototypes: torch.FloatTensor | None = None
    teacher_spatial_prototypes: torch.FloatTensor | None = None
    semantic_centres: torch.FloatTensor | None = None
    spatial_centres: torch.FloatTensor | None = None
    teacher_semantic_centres: torch.FloatTensor | None = None
    teacher_spatial_centres: torch.FloatTensor | None = None


@dataclass
class SSASemanticSegmenterOutput(ModelOutput):
    """Output of [`SSAForSemanticSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Sum of the eight weighted SSA terms.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height / 4, width / 4)`):
            SSA's adapted prediction. Upsample to the image size before taking the argmax (as SegFormer).
        coarse_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height / 4, width / 4)`):
            Prediction of the fixed prototypes (the plain 1x1 classifier).
        teacher_logits (`torch.FloatTensor`, *optional*, returned when `labels` are given):
            Prediction of the ground-truth-guided teacher, same shape as `logits`.
        loss_terms (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` are given):
            Detached weighted terms `main`, `coarse`, `teacher`, `response_distillation`, `dice_student`,
            `dice_teacher`, `semantic_distillation`, `spatial_distillation`; they sum to `loss`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            Encoder stage outputs of shape `(batch_size, hidden_size_i, height_i, width_i)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Encoder attention weights.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    coarse_logits: torch.FloatTensor | None = None
    teacher_logits: torch.FloatTensor | None = None
    loss_terms: dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class SSAPrototypeFusion(nn.Module):
    """Fusion MLP of a centre and a prototype: Linear(2C -> C', no bias) -> ReLU -> Linear(C' -> C)."""

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.reduce = nn.Linear(2 * channels, hidden_channels, bias=False)
        self.activation = nn.ReLU()
        self.expand = nn.Linear(hidden_channels, channels)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.expand(self.activation(self.reduce(torch.cat([first, second], dim=-1))))


class SSAClassifier(nn.Module):
    """The SSA pixel-level classifier: a drop-in replacement for a decoder's final 1x1 convolution.

    `weight` (K, C, 1, 1) and `bias` (K,) are that convolution's parameters (the fixed prototypes), so a trained
    decoder's classifier loads into it unchanged. Given the decoder feature F (B, C, h, w) it returns SSA's adapted
    logits (spec section 2); given also the labels at feature resolution, the teacher's outputs (section 3).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        logit_scale: float = 15.0,
        fusion_hidden_ratio: float = 0.5,
        dropout: float = 0.1,
        ignore_index: int = 255,
        group_size: int | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.logit_scale = logit_scale
        self.ignore_index = ignore_index
        self.group_size = group_size
        hidden_channels = int(channels * fusion_hidden_ratio)
        self.weight = nn.Parameter(torch.empty(num_classes, channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(num_classes))
        self.dropout = nn.Dropout2d(dropout)
        # Depth-wise 3x3 conv: feature position encoding P_f (no residual inside).
        self.position_encoder = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.class_position_basis = nn.Embedding(num_classes, channels)
        self.semantic_fusion = SSAPrototypeFusion(channels, hidden_channels)
        self.spatial_fusion = SSAPrototypeFusion(channels, hidden_channels)
        self.prototype_projection = nn.Linear(channels, channels, bias=False)
        # Ground-truth-guided teacher: training only.
        self.teacher_semantic_fusion = SSAPrototypeFusion(channels, hidden_channels)
        self.teacher_spatial_fusion = SSAPrototypeFusion(channels, hidden_channels)
        self.teacher_prototype_projection = nn.Linear(channels, channels, bias=False)
        for module in self.modules():  # lets the model's _init_weights leave these layers to this class's init
            if module is not self:
                module._ssa_classifier_layer = True
        self.reset_parameters()

    def reset_parameters(self, classifier_init_std: float = 0.01) -> None:
        """Spec section 1: fixed prototypes N(0, 0.01^2) with zero bias; every other layer PyTorch's default."""
        nn.init.normal_(self.weight, std=classifier_init_std)
        nn.init.zeros_(self.bias)
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    @property
    def fixed_prototypes(self) -> torch.Tensor:
        """Wc: (K, C)."""
        return self.weight.flatten(1)

    def position_encoding(self, features: torch.Tensor) -> torch.Tensor:
        """P_f = depth-wise 3x3 conv of F. Without autograd, nine shifted multiply-adds: on the CPU, oneDNN's
        depth-wise kernel is up to 10x slower than that when its output lands on fresh pages."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():  # export/compile: one conv node is better
            return self.position_encoder(features)
        weight = self.position_encoder.weight  # (C, 1, 3, 3)
        bias = self.position_encoder.bias.view(1, -1, 1, 1)
        position = torch.addcmul(bias, features, weight[:, 0, 1, 1].view(1, -1, 1, 1))  # centre tap
        height, width = features.shape[-2:]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == dx == 0:
                    continue
                # out[i, j] += w[dy, dx] * F[i + dy, j + dx] where both lie inside the image (zero padding).
                rows_out = slice(max(0, -dy), height - max(0, dy))
                cols_out = slice(max(0, -dx), width - max(0, dx))
                rows_in = slice(max(0, dy), height - max(0, -dy))
                cols_in = slice(max(0, dx), width - max(0, -dx))
                tap = weight[:, 0, dy + 1, dx + 1].view(1, -1, 1, 1)
                position[:, :, rows_out, cols_out].addcmul_(features[:, :, rows_in, cols_in], tap)
        return position

    def _cosine_logits(
        self, pixel_embeddings: torch.Tensor, prototypes: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """scale * <n(U[:, :, n]), n(V[:, k])>, with n(v) = v / (|v| + eps). U (B, C, N), V (B, K, C) -> (B, K, N).

        The scale is folded into the (small) prototypes and the pixel norms divide the product in place, so the
        only (B, K, N) tensor is the product itself. `out` (a spent buffer) marks the no-autograd inference path.
        """
        scaled_prototypes = self.logit_scale * prototypes / (prototypes.norm(dim=-1, keepdim=True) + _EPS)
        if out is None or pixel_embeddings.device.type != "cpu" or torch.compiler.is_compiling():
            product = torch.bmm(scaled_prototypes, pixel_embeddings, out=out)
        else:
            # CPU inference: the same product as a grouped 1x1 convolution (one group per image). oneDNN's kernel is
            # about 1.5x faster than the BLAS bmm here (MKL takes a slow path on AMD CPUs). Eager only: a group count
            # that follows the batch size cannot be exported or compiled.
            batch, channels, num_pixels = pixel_embeddings.shape
            product = F.conv2d(
                pixel_embeddings.reshape(1, batch * channels, num_pixels, 1),
                scaled_prototypes.reshape(-1, channels, 1, 1),
                groups=batch,
            ).view(batch, -1, num_pixels)
        return product.div_(_pixel_norms(pixel_embeddings) + _EPS)

    def forward(self, features: torch.Tensor, labels_small: torch.Tensor | None = None) -> SSAClassifierOutput:
        """
        Args:
            features: (B, C, h, w) decoder feature F.
            labels_small: optional (B, h, w) labels at feature resolution; runs the teacher when given.
        """
        with float32_region(features.device):
            return self._forward(at_least_float32(features), labels_small)

    def _forward(self, features, labels_small):
        if labels_small is None and torch.onnx.is_in_onnx_export() and not self.training:
            return self._onnx_inference(features)
        batch, channels, height, width = features.shape
        coarse_logits = F.conv2d(self.dropout(features), self.weight, self.bias)  # M: (B, K, h, w)
        position = self.position_encoding(features)  # P_f: (B, C, h, w)
        pixel_features = features.flatten(2)  # (B, C, N)
        pixel_positions = position.flatten(2)
        coarse = coarse_logits.flatten(2)  # (B, K, N)

        # SPPA: centres of the position encoding under a softmax over pixels, fused with the class basis E.
        pixel_softmax = coarse.softmax(dim=-1)  # A: (B, K, N)
        spatial_centres = torch.bmm(pixel_softmax, pixel_positions.transpose(1, 2))  # P_c: (B, K, C)
        # SEPA: probability-weighted class means of F under a softmax over classes.
        class_probs = coarse.softmax(dim=1)
        semantic_centres = torch.bmm(class_probs, pixel_features.transpose(1, 2)) / (
            class_probs.sum(dim=-1, keepdim=True) + _EPS
        )  # S_c: (B, K, C)
        spatial_prototypes, semantic_prototypes, adapted_prototypes = self._adapted_prototypes(
            spatial_centres, semantic_centres
        )
        if labels_small is None and not torch.is_grad_enabled():
            # Inference: U = F + P_f in P_f's buffer and the logits in A's; fresh pages cost more than the math.
            pixel_embeddings = pixel_positions.add_(pixel_features)
            logits = self._cosine_logits(pixel_embeddings, adapted_prototypes, out=pixel_softmax)
        else:
            pixel_embeddings = pixel_features + pixel_positions  # U = F + P_f
            logits = self._cosine_logits(pixel_embeddings, adapted_prototypes)
        logits = logits.view(batch, -1, height, width)
        output = SSAClassifierOutput(
            logits=logits,
            coarse_logits=coarse_logits,
            semantic_prototypes=semantic_prototypes,
            spatial_prototypes=spatial_prototypes,
            semantic_centres=semantic_centres,
            spatial_centres=spatial_centres,
        )
        if labels_small is None:
            return output

        # Teacher: centres from the ground truth; absent classes fall back to the detached Wc / E rows.
        basis, prototypes = self.class_position_basis.weight, self.fixed_prototypes  # E, Wc: (K, C)
        ones = pixel_features.new_ones(batch, 1, pixel_features.shape[-1])
        pixel_counts = per_class_sums(ones, labels_small, self.num_classes, self.ignore_index)  # (B, K, 1)
        feature_sums = per_class_sums(pixel_features, labels_small, self.num_classes, self.ignore_index)  # (B, K, C)
        position_sums = per_class_sums(pixel_positions, labels_small, self.num_classes, self.ignore_index)
        # Semantic centres pool all pixels of an image group (the per-GPU batch of the original): (G, K, C).
        group_size = self.group_size or batch
        group_counts = group_sum(pixel_counts, group_size)
        teacher_semantic_centres = torch.where(
            group_counts > 0, group_sum(feature_sums, group_size) / (group_counts + _EPS), prototypes.detach()
        )
        num_groups = group_counts.shape[0]
        group_prototypes = self.teacher_semantic_fusion(
            teacher_semantic_centres, prototypes.expand(num_groups, -1, -1)
        )  # Ŝ_p: (G, K, C)
        group_index = torch.arange(batch, device=features.device) // group_size
        teacher_semantic_prototypes = group_prototypes.index_select(0, group_index)  # (B, K, C)
        # Spatial centres per image.
        teacher_spatial_centres = torch.where(
            pixel_counts > 0, position_sums / (pixel_counts + _EPS), basis.detach()
        )  # P̂_c: (B, K, C)
        teacher_spatial_prototypes = self.teacher_spatial_fusion(
            teacher_spatial_centres, basis.expand(batch, -1, -1)
        )  # P̂_p
        teacher_prototypes = self.teacher_prototype_projection(teacher_semantic_prototypes + teacher_spatial_prototypes)
        output.teacher_logits = self._cosine_logits(pixel_embeddings, teacher_prototypes).view(
            batch, -1, height, width
        )
        output.teacher_semantic_prototypes = teacher_semantic_prototypes
        output.teacher_spatial_prototypes = teacher_spatial_prototypes
        output.teacher_semantic_centres = teacher_semantic_centres
        output.teacher_spatial_centres = teacher_spatial_centres
        return output

    def _adapted_prototypes(self, spatial_centres: torch.Tensor, semantic_centres: torch.Tensor) -> tuple:
        """P_p = fuse(E, P_c), S_p = fuse(S_c, Wc) and V = proj(S_p + P_p), each (B, K, C)."""
        batch = spatial_centres.shape[0]
        basis, prototypes = self.class_position_basis.weight, self.fixed_prototypes  # E, Wc: (K, C)
        spatial_prototypes = self.spatial_fusion(basis.expand(batch, -1, -1), spatial_centres)
        semantic_prototypes = self.semantic_fusion(semantic_centres, prototypes.expand(batch, -1, -1))
        adapted_prototypes = self.prototype_projection(semantic_prototypes + spatial_prototypes)
        return spatial_prototypes, semantic_prototypes, adapted_prototypes

    def _onnx_inference(self, features: torch.Tensor) -> SSAClassifierOutput:
        """`_forward` without labels, laid out for onnxruntime (same function, float rounding aside): each softmax
        and reduction along a contiguous axis (a softmax over a strided axis is about 8x slower there), coarse
        logits as a matrix product (no NCHWc reorders)."""
        batch, channels, height, width = features.shape
        pixel_features = features.flatten(2)  # (B, C, N)
        pixels_last = features.permute(0, 2, 3, 1).reshape(batch, -1, channels)  # (B, N, C); cancels the decoder's
        coarse = torch.matmul(self.fixed_prototypes, pixel_features) + self.bias[:, None]  # M: (B, K, N)
        pixel_positions = self.position_encoder(features).flatten(2)  # P_f
        spatial_centres = torch.bmm(coarse.softmax(dim=-1), pixel_positions.transpose(1, 2))  # P_c
        class_probs = coarse.transpose(1, 2).softmax(dim=-1)  # (B, N, K)
        semantic_centres = torch.bmm(class_probs.transpose(1, 2), pixels_last) / (
            class_probs.sum(dim=1).unsqueeze(-1) + _EPS
        )  # S_c
        spatial_prototypes, semantic_prototypes, adapted_prototypes = self._adapted_prototypes(
            spatial_centres, semantic_centres
        )
        logits = self._cosine_logits(pixel_features + pixel_positions, adapted_prototypes)  # U = F + P_f
        return SSAClassifierOutput(
            logits=logits.view(batch, -1, height, width),
            coarse_logits=coarse.view(batch, -1, height, width),
            semantic_prototypes=semantic_prototypes,
            spatial_prototypes=spatial_prototypes,
            semantic_centres=semantic_centres,
            spatial_centres=spatial_centres,
        )


def _pixel_norms(x: torch.Tensor, block_channels: int = 32) -> torch.Tensor:
    """Euclidean norm over channels: (B, C, N) -> (B, 1, N). Accumulated over channel blocks, because a full-size
    square is a large temporary (fresh pages) and `norm(dim=1)` reduces a strided axis slowly on the CPU. In an ONNX
    graph, a ones-row matrix product: onnxruntime's strided ReduceSumSquare is about 7x slower."""
    if torch.onnx.is_in_onnx_export():
        return torch.matmul(x.new_ones(1, x.shape[1]), x * x).sqrt()
    squares = x.new_zeros(x.shape[0], 1, x.shape[2])
    for block in x.split(block_channels, dim=1):
        squares = squares + (block * block).sum(dim=1, keepdim=True)
    return squares.sqrt()


def _fused_feature(stages: list, mode: str, norm: nn.BatchNorm2d, activation: nn.Module) -> torch.Tensor:
    """act(norm(sum_i up(W_i x_i + b_i))): the decoder feature F, (B, C, h_1, w_1). See `_sum_upsampled`."""
    if torch.onnx.is_in_onnx_export() and not norm.training:
        return _fused_feature_channels_last(stages, norm, activation)
    return activation(norm(_sum_upsampled(stages, mode)))


def _fused_feature_channels_last(stages: list, norm: nn.BatchNorm2d, activation: nn.Module) -> torch.Tensor:
    """The same F for ONNX graphs: maps channels-last, batch norm folded into the weights and one bias.

    onnxruntime resizes channels-last maps about 5x faster than channels-first ones (its transpose optimiser removes
    the permutes around each Resize), and a projection as a MatMul over channels-last pixels avoids NCHWc reorders.
    """
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = norm.bias - norm.running_mean * scale
    target_size = stages[0][0].shape[2:]
    total = None
    for hidden_state, weight, stage_bias in stages:
        if stage_bias is not None:
            bias = bias + scale * stage_bias
        mapped = hidden_state.permute(0, 2, 3, 1) @ (weight * scale[:, None]).T  # (B, h_i, w_i, C)
        if mapped.shape[1:3] != target_size:
            mapped = F.interpolate(mapped.permute(0, 3, 1, 2), size=target_size, mode="bilinear", align_corners=False)
            mapped = mapped.permute(0, 2, 3, 1)
        total = mapped if total is None else total + mapped
    return activation(total + bias).permute(0, 3, 1, 2)


def _sum_upsampled(stages: list, mode: str) -> torch.Tensor:
    """sum_i up(W_i x_i + b_i) at the first stage's resolution (bilinear, align_corners=False).

    stages: (x_i (B, C_i, h_i, w_i), W_i (C, C_i), b_i (C,) or None). mode "linear" applies W_i as a Linear over the
    channels-last view (x_i from the encoder), "conv" as a 1x1 convolution (x_i from a conv).
    """
    target_size = stages[0][0].shape[2:]
    total = None
    for hidden_state, weight, bias in stages:
        batch, _, height, width = hidden_state.shape
        if mode == "linear":
            mapped = F.linear(hidden_state.flatten(2).transpose(1, 2), weight, bias)  # (B, h_i w_i, C)
            mapped = mapped.transpose(1, 2).reshape(batch, -1, height, width)
        else:
            mapped = F.conv2d(hidden_state, weight[:, :, None, None], bias)
        if mapped.shape[2:] != target_size:  # same size: bilinear resizing is the identity, skipped
            # Resize a contiguous copy: on the CPU, upsampling a channels-last view is about 3x slower.
            mapped = F.interpolate(mapped.contiguous(), size=target_size, mode="bilinear", align_corners=False)
        if total is None:
            total = mapped.contiguous()
        elif torch.is_grad_enabled():
            total = total + mapped
        else:
            total.add_(mapped)
    return total


class SSASegformerMLP(nn.Module):
    """Holder of a per-stage linear projection of the SegFormer decoder, under transformers' parameter names
    (`linear_projections.i.proj`). The decode head folds its weights into the fusion conv's and applies them itself."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.proj = nn.Linear(input_dim, output_dim)


class SSADecodeHead(nn.Module):
    """A decoder ending in the SSA classifier: subclasses build `classifier` and define `fuse` (feature maps -> F)."""

    classifier: "SSAClassifier"

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, feature_maps: tuple[torch.Tensor, ...], labels_small: torch.Tensor | None = None
    ) -> SSAClassifierOutput:
        return self.classifier(self.fuse(feature_maps), labels_small)


def _feature_map(hidden_state: torch.Tensor, reshape_last_stage: bool) -> torch.Tensor:
    """MiT's last stage as (B, C, h, w) when the encoder returns it as a (B, N, C) sequence (square images)."""
    if reshape_last_stage or hidden_state.ndim != 3:
        return hidden_state
    side = int(math.sqrt(hidden_state.shape[1]))
    return hidden_state.reshape(hidden_state.shape[0], side, side, -1).permute(0, 3, 1, 2)


class SSASegformerDecodeHead(SSADecodeHead):
    """SegFormer's all-MLP decoder in the transformers layout, ending in the SSA classifier.

    The feature SSA sees is taken after fuse, batch norm and activation, before dropout (spec section 8); the dropout
    lives inside the classifier, on the coarse path only.
    """

    def __init__(self, config: SSAConfig, in_channels: list[int]):
        super().__init__()
        self.reshape_last_stage = getattr(config.backbone_config, "reshape_last_stage", True)
        self.linear_projections = nn.ModuleList(
            [SSASegformerMLP(size, config.decoder_hidden_size) for size in in_channels]
        )
        self.linear_fuse = nn.Conv2d(
            config.decoder_hidden_size * len(in_channels), config.decoder_hidden_size, 1, bias=False
        )
        self.batch_norm = nn.BatchNorm2d(config.decoder_hidden_size)
        self.activation = nn.ReLU()
        self.classifier = _ssa_classifier(config)

    def fuse(self, encoder_hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F: (B, C, h/4, w/4) = ReLU(BN(linear_fuse(concat_i up(proj_i(x_i))))), as in transformers.

        The 1x1 fusion conv is linear and commutes with bilinear upsampling, so its block for stage i is folded into
        that stage's projection and applied at the stage's own resolution: F = act(BN(sum_i up((W_i P_i) x_i))).
        Same function (float rounding aside), without the 4C-channel concatenation at 1/4 resolution and its GEMM.
        """
        fuse_weight = self.linear_fuse.weight.flatten(1)  # (C, stages * C), stages concatenated in reverse order
        channels, num_stages = fuse_weight.shape[0], len(encoder_hidden_states)
        folded = []
        for stage, (hidden_state, projection) in enumerate(zip(encoder_hidden_states, self.linear_projections)):
            hidden_state = _feature_map(hidden_state, self.reshape_last_stage)
            block = fuse_weight[:, (num_stages - 1 - stage) * channels : (num_stages - stage) * channels]
            folded.append((hidden_state, block @ projection.proj.weight, block @ projection.proj.bias))
        return _fused_feature(folded, "linear", self.batch_norm, self.activation)


class SSAConvModule(nn.Module):
    """Conv without bias, batch norm, ReLU: transformers' `UperNetConvModule` (norm named `batch_norm`); the
    `SSAMMSegConvModule` subclass is mmcv's `ConvModule` as mmseg decoders use it (norm named `bn`)."""

    norm_name = "batch_norm"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        padding = (kernel_size // 2) * dilation
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.add_module(self.norm_name, nn.BatchNorm2d(out_channels))
        self.activation = nn.ReLU()

    @property
    def norm(self) -> nn.BatchNorm2d:
        return getattr(self, self.norm_name)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(hidden_states)))


class SSAMMSegConvModule(SSAConvModule):
    norm_name = "bn"


class SSASegformerMMSegDecodeHead(SSADecodeHead):
    """mmsegmentation 0.30's `SegformerHead` (the decoder of the official SSA code), ending in the SSA classifier:
    per stage a 1x1 conv + BN + ReLU, bilinear resize to stride 4, concatenation in stage order 1..4, and a 1x1
    fusion conv + BN + ReLU whose output is F. Parameter names follow mmseg (`convs.i.conv`, `fusion_conv.bn`, ...).
    """

    def __init__(self, config: SSAConfig, in_channels: list[int]):
        super().__init__()
        self.reshape_last_stage = getattr(config.backbone_config, "reshape_last_stage", True)
        channels = config.decoder_hidden_size
        self.convs = nn.ModuleList([SSAMMSegConvModule(size, channels) for size in in_channels])
        self.fusion_conv = SSAMMSegConvModule(channels * len(in_channels), channels)
        self.classifier = _ssa_classifier(config)

    def fuse(self, encoder_hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F: (B, C, h/4, w/4). As in the transformers layout, the fusion conv's block for stage i is
        applied at that stage's resolution, before upsampling (exact by linearity): F = ReLU(BN(sum_i up(W_i r_i)))
        with r_i = ReLU(BN(conv_i(x_i)))."""
        fuse_weight = self.fusion_conv.conv.weight.flatten(1)  # (C, stages * C), stages in order 1..n
        channels = fuse_weight.shape[0]
        folded = []
        for stage, (hidden_state, conv) in enumerate(zip(encoder_hidden_states, self.convs)):
            hidden_state = _feature_map(hidden_state, self.reshape_last_stage)
            block = fuse_weight[:, stage * channels : (stage + 1) * channels]
            folded.append((conv(hidden_state), block, None))
        fusion = self.fusion_conv
        return _fused_feature(folded, "conv", fusion.norm, fusion.activation)


def _adaptive_avg_pool_any_size(x: torch.Tensor, output_size: int) -> torch.Tensor:
    """`nn.AdaptiveAvgPool2d(output_size)` from cumulative sums and bin bounds computed from the input's size, so an
    exported graph keeps a dynamic height and width (the exporter fixes adaptive pooling's bins to the example size).
    Bin i along a side of length L covers [floor(i L / s), ceil((i + 1) L / s)), as in PyTorch."""
    index = torch.arange(output_size, device=x.device)
    for dim in (2, 3):
        length = x.shape[dim]
        start = index * length // output_size
        end = ((index + 1) * length + output_size - 1) // output_size
        # Sums of rows [0, r) for r = 0..L: the cumulative sum with a zero row in front.
        sums = F.pad(x.cumsum(dim), (0, 0, 1, 0) if dim == 2 else (1, 0))
        counts = (end - start).to(x.dtype).view((1, 1, -1, 1) if dim == 2 else (1, 1, 1, -1))
        x = (sums.index_select(dim, end) - sums.index_select(dim, start)) / counts
    return x


class SSAUperNetDecodeHead(SSADecodeHead):
    """UperNet (pyramid pooling 1, 2, 3, 6 on the last feature map + FPN) in the layout of transformers'
    `UperNetHead`, so its checkpoints load unchanged; F is the `fpn_bottleneck` output (spec section 7) and the SSA
    classifier replaces `classifier`."""

    def __init__(self, config: SSAConfig, in_channels: list[int]):
        super().__init__()
        channels = config.decoder_hidden_size
        self.psp_modules = nn.ModuleList(
            [nn.Sequential(nn.AdaptiveAvgPool2d(scale), SSAConvModule(in_channels[-1], channels))
             for scale in config.pool_scales]
        )
        self.bottleneck = SSAConvModule(in_channels[-1] + len(config.pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList([SSAConvModule(size, channels) for size in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([SSAConvModule(channels, channels, 3) for _ in in_channels[:-1]])
        self.fpn_bottleneck = SSAConvModule(len(in_channels) * channels, channels, 3)
        self.classifier = _ssa_classifier(config)

    def fuse(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decoder feature F at the first feature map's resolution: (B, C, h, w)."""
        top = feature_maps[-1]
        pooled = []
        for pool, conv in self.psp_modules:
            if torch.onnx.is_in_onnx_export():  # bins that follow the image size, not the example's
                bins = _adaptive_avg_pool_any_size(top, pool.output_size)
            else:
                bins = pool(top)
            pooled.append(F.interpolate(conv(bins), size=top.shape[2:], mode="bilinear", align_corners=False))
        laterals = [conv(feature_maps[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down path
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="bilinear", align_corners=False
            )
        outputs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)] + [laterals[-1]]
        size = outputs[0].shape[2:]
        outputs = [outputs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False)
                                  for o in outputs[1:]]
        return self.fpn_bottleneck(torch.cat(outputs, dim=1))


class SSAAuxiliaryHead(nn.Module):
    """The auxiliary FCN head of UperNet configs, in the layout of transformers' `UperNetFCNHead`: 3x3 conv modules
    on the third feature map and a 1x1 classifier. Training only (its loss is weighted by auxiliary_loss_weight)."""

    def __init__(self, config: SSAConfig, in_channels: list[int], in_index: int = 2):
        super().__init__()
        self.in_index = in_index
        source = config.auxiliary_in_channels or in_channels[in_index]
        channels = config.auxiliary_channels
        convs = [SSAConvModule(source if i == 0 else channels, channels, 3)
                 for i in range(config.auxiliary_num_convs)]
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()
        self.concat_input = config.auxiliary_concat_input
        if self.concat_input:
            self.conv_cat = SSAConvModule(source + channels, channels, 3)
        self.classifier = nn.Conv2d(channels, config.num_labels, 1)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        hidden_states = feature_maps[self.in_index]
        output = self.convs(hidden_states)
        if self.concat_input:
            output = self.conv_cat(torch.cat([hidden_states, output], dim=1))
        return self.classifier(output)


def _ssa_classifier(config: SSAConfig) -> SSAClassifier:
    return SSAClassifier(
        channels=config.decoder_hidden_size,
        num_classes=config.num_labels,
        logit_scale=config.logit_scale,
        fusion_hidden_ratio=config.fusion_hidden_ratio,
        dropout=config.classifier_dropout_prob,
        ignore_index=config.semantic_loss_ignore_index,
        group_size=config.teacher_group_size,
    )


DECODE_HEADS = {
    "segformer": SSASegformerDecodeHead,
    "segformer_mmseg": SSASegformerMMSegDecodeHead,
    "upernet": SSAUperNetDecodeHead,
}


class SSAPreTrainedModel(PreTrainedModel):
    config_class = SSAConfig
    config: SSAConfig
    base_model_prefix = "segformer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """SegFormer's init for encoder and decoder; spec section 1 for the SSA classifier (PyTorch defaults, unit
        normal class basis, fixed prototypes N(0, classifier_init_std^2) with zero bias)."""
        if isinstance(module, SSAClassifier):
            init.normal_(module.weight, std=self.config.classifier_init_std)
            init.zeros_(module.bias)
            for layer in module.modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    _torch_default_init(layer)
                elif isinstance(layer, nn.Embedding):
                    init.normal_(layer.weight)
        elif not getattr(module, "_ssa_classifier_layer", False):
            super()._init_weights(module)


def _torch_default_init(layer: nn.Module) -> None:
    """`nn.Linear` / `nn.Conv2d` constructor init, through transformers' init functions (they skip loaded weights)."""
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        fan_in = layer.weight[0].numel()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(layer.bias, -bound, bound)


def _stage_margins(encoder, height: int, width: int) -> list[int]:
    """For each MiT stage, min(stage height, stage width) minus its sequence-reduction kernel (negative: too small)."""
    margins = []
    for kernel, stride, reduction in zip(encoder.patch_sizes, encoder.strides, encoder.sr_ratios):
        height = (height + 2 * (kernel // 2) - kernel) // stride + 1
        width = (width + 2 * (kernel // 2) - kernel) // stride + 1
        margins.append(min(height, width) - reduction)
    return margins


class SSAForSemanticSegmentation(SSAPreTrainedModel):
    """SegFormer with the SSA classifier. Without labels the teacher does not run and `logits` is SSA's adapted
    prediction at 1/4 resolution; with labels the output carries the total loss and its eight named terms.

    Example:

    ```python
    >>> import torch
    >>> from ssa_hf import SSAConfig, SSAForSemanticSegmentation

    >>> model = SSAForSemanticSegmentation(SSAConfig.from_segformer_config("b0", num_labels=19))
    >>> pixel_values = torch.randn(2, 3, 128, 160)
    >>> labels = torch.randint(0, 19, (2, 128, 160))
    >>> out = model(pixel_values=pixel_values, labels=labels)
    >>> out.logits.shape, sorted(out.loss_terms)[:2]
    (torch.Size([2, 19, 32, 40]), ['coarse', 'dice_student'])

    ```
    """

    def __init__(self, config: SSAConfig):
        super().__init__(config)
        if config.backbone_config.model_type == "segformer":  # MiT: transformers' SegFormer encoder and names
            self.segformer = SegformerModel(config.backbone_config)
            in_channels = list(config.backbone_config.hidden_sizes)
        else:  # any AutoBackbone (Swin, ConvNeXt, ResNet, DINOv2, ...), as transformers' UperNet builds it
            self.backbone = load_backbone(config)
            in_channels = list(self.backbone.channels)
        self.decode_head = DECODE_HEADS[config.decoder_type](config, in_channels)
        self.auxiliary_head = SSAAuxiliaryHead(config, in_channels) if config.use_auxiliary_head else None
        self.ssa_loss = SSALoss(
            num_classes=config.num_labels,
            weights={
                "main": config.main_loss_weight,
                "coarse": config.coarse_loss_weight,
                "teacher": config.teacher_loss_weight,
                "response_distillation": config.response_distillation_weight,
                "dice_student": config.dice_student_weight,
                "dice_teacher": config.dice_teacher_weight,
                "semantic_distillation": config.semantic_distillation_weight,
                "spatial_distillation": config.spatial_distillation_weight,
            },
            ignore_index=config.semantic_loss_ignore_index,
            logit_scale=config.logit_scale,
            label_mix=config.distillation_label_mix,
            boundary_frame_width=config.boundary_frame_width,
            boundary_dilation_size=config.boundary_dilation_size,
            group_size=config.teacher_group_size,
        )
        self.post_init()

    def _check_inputs(self, pixel_values: torch.Tensor, labels: torch.Tensor | None) -> None:
        expected_channels = getattr(self.config.backbone_config, "num_channels", 3)
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}.")
        if pixel_values.shape[1] != expected_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the encoder expects {expected_channels} "
                f"(shape {tuple(pixel_values.shape)}); convert images to RGB before processing."
            )
        if hasattr(self, "segformer") and not torch.compiler.is_compiling():
            self._check_image_size(*pixel_values.shape[2:])
        if labels is None:
            return
        if labels.ndim != 3 or labels.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"labels must have shape (batch, height, width) with batch {pixel_values.shape[0]}, "
                f"got {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor of class indices, got dtype {labels.dtype}.")
        if self.config.validate_labels:
            ignore_index = self.config.semantic_loss_ignore_index
            bad = (labels != ignore_index) & ((labels < 0) | (labels >= self.config.num_labels))
            if bad.any():
                values = sorted(set(labels[bad].unique().tolist()))
                shown = ", ".join(map(str, values[:20])) + (" ..." if len(values) > 20 else "")
                raise ValueError(
                    f"labels contain values {shown} that are neither a class index in [0, {self.config.num_labels}) "
                    f"nor the ignore index {ignore_index}. Check num_labels and the label convention "
                    f"(e.g. reduce_labels for ADE20K)."
                )

    def _auxiliary_loss(self, feature_maps, labels: torch.Tensor) -> torch.Tensor:
        """mmseg FCNHead loss: bilinear upsampling (align_corners=False) to the labels, cross-entropy summed over
        valid pixels and divided by all pixels (CrossEntropyLoss with avg_non_ignore=False)."""
        logits = self.auxiliary_head(feature_maps)
        with float32_region(logits.device):
            logits = F.interpolate(at_least_float32(logits), size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            total = F.cross_entropy(logits, labels, ignore_index=self.config.semantic_loss_ignore_index,
                                    reduction="sum")
        return total / labels.numel()

    def _check_image_size(self, height: int, width: int) -> None:
        """Every encoder stage must be at least as large as its sequence-reduction kernel; torch would otherwise fail
        deep inside a convolution."""
        if min(_stage_margins(self.config.backbone_config, height, width)) >= 0:
            return
        side = next(s for s in range(1, 4097) if min(_stage_margins(self.config.backbone_config, s, s)) >= 0)
        raise ValueError(
            f"pixel_values of size {height}x{width} are too small for this encoder (its sequence reductions need "
            f"images of at least {side}x{side} pixels); resize or pad the images."
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SSASemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images, e.g. from `SegformerImageProcessor`. Any size; SegFormer pads internally.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class indices or `config.semantic_loss_ignore_index`. When given, the teacher runs and the loss is
                returned; the losses work at the labels' resolution (normally the image size).
        """
        self._check_inputs(pixel_values, labels)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if hasattr(self, "segformer"):
            encoder_outputs = self.segformer(
                pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True
            )
            feature_maps = encoder_hidden_states = encoder_outputs.hidden_states
        else:
            encoder_outputs = self.backbone.forward_with_filtered_kwargs(
                pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions
            )
            feature_maps, encoder_hidden_states = encoder_outputs.feature_maps, encoder_outputs.hidden_states
        features = self.decode_head.fuse(feature_maps)

        loss = loss_terms = None
        if labels is None:
            head = self.decode_head.classifier(features)
        else:
            labels = labels.long()
            labels_small = downsample_labels(labels, features.shape[-2:])
            head = self.decode_head.classifier(features, labels_small)
            loss, terms = self.ssa_loss(
                logits=head.logits,
                coarse_logits=head.coarse_logits,
                teacher_logits=head.teacher_logits,
                semantic_prototypes=head.semantic_prototypes,
                teacher_semantic_prototypes=head.teacher_semantic_prototypes,
                spatial_prototypes=head.spatial_prototypes,
                teacher_spatial_prototypes=head.teacher_spatial_prototypes,
                labels=labels,
                labels_small=labels_small,
            )
            if self.auxiliary_head is not None:
                terms["auxiliary"] = self.config.auxiliary_loss_weight * self._auxiliary_loss(feature_maps, labels)
                loss = loss + terms["auxiliary"]
            loss_terms = {name: value.detach() for name, value in terms.items()}

        output = SSASemanticSegmenterOutput(
            loss=loss,
            logits=head.logits,
            coarse_logits=head.coarse_logits,
            teacher_logits=head.teacher_logits,
            loss_terms=loss_terms,
            hidden_states=encoder_hidden_states if output_hidden_states else None,
            attentions=encoder_outputs.attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    @classmethod
    def from_segformer(
        cls,
        segformer: "str | SegformerForSemanticSegmentation",
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **config_kwargs,
    ) -> "SSAForSemanticSegmentation":
        """Put SSA on a SegFormer: encoder, decoder and 1x1 classifier (the fixed prototypes) are copied; the SSA
        layers start fresh (spec section 1).

        Args:
            segformer: a hub id, a local folder, or a `SegformerForSemanticSegmentation` instance.
            num_labels / id2label: a new class set; the classifier is then re-initialised (logged).
            config_kwargs: other `SSAConfig` fields, e.g. `teacher_group_size=4`.

        Save `SSAImageProcessor.from_source(segformer)` beside the model, so that the folder preprocesses as its
        source did (`ssa-seg convert` saves both).
        """
        segformer = _source_model(segformer, SegformerForSemanticSegmentation, "from_segformer")
        source_config: SegformerConfig = segformer.config
        config = SSAConfig.from_segformer_config(source_config, num_labels=num_labels, id2label=id2label, **config_kwargs)
        model = cls(config)
        state = segformer.state_dict()
        if config.num_labels != source_config.num_labels:
            logger.warning(
                f"from_segformer: the source classifier has {source_config.num_labels} classes and the new model "
                f"{config.num_labels}; the classifier (fixed prototypes) is re-initialised and must be trained."
            )
            state = {k: v for k, v in state.items() if not k.startswith("decode_head.classifier.")}
        model._load_source_weights(state, "SegFormer")
        return model.to(dtype=next(segformer.parameters()).dtype)

    @classmethod
    def from_upernet(
        cls,
        upernet: "str | UperNetForSemanticSegmentation",
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **config_kwargs,
    ) -> "SSAForSemanticSegmentation":
        """Put SSA on a transformers UperNet (Swin, ConvNeXt, ... backbone): backbone, UperNet decoder, auxiliary head
        and the 1x1 classifier (the fixed prototypes) are copied; the SSA layers start fresh (spec section 1).

        Args:
            upernet: a hub id, a local folder, or an `UperNetForSemanticSegmentation` instance.
            num_labels / id2label: a new class set; both classifiers are then re-initialised (logged).
            config_kwargs: other `SSAConfig` fields, e.g. `teacher_group_size=4`.

        Save `SSAImageProcessor.from_source(upernet)` beside the model, so that the folder preprocesses as its
        source did (`ssa-seg convert` saves both).
        """
        upernet = _source_model(upernet, UperNetForSemanticSegmentation, "from_upernet")
        source = upernet.config
        if source.backbone_config is None:
            raise ValueError("This UperNet names its backbone by a timm/hub string, not a backbone_config; "
                             "only transformers backbones are supported.")
        keep_classes = id2label is None and num_labels in (None, source.num_labels)
        if keep_classes:
            id2label = {int(k): v for k, v in source.id2label.items()}
        elif id2label is None:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        id2label = {int(k): v for k, v in id2label.items()}
        config = SSAConfig(
            backbone_config=source.backbone_config.to_dict(),
            decoder_type="upernet",
            decoder_hidden_size=source.hidden_size,
            pool_scales=list(source.pool_scales),
            use_auxiliary_head=source.use_auxiliary_head,
            auxiliary_loss_weight=source.auxiliary_loss_weight,
            auxiliary_in_channels=source.auxiliary_in_channels,
            auxiliary_channels=source.auxiliary_channels,
            auxiliary_num_convs=source.auxiliary_num_convs,
            auxiliary_concat_input=source.auxiliary_concat_input,
            semantic_loss_ignore_index=source.loss_ignore_index,
            id2label=id2label,
            label2id={name: index for index, name in id2label.items()},
            **config_kwargs,
        )
        model = cls(config)
        state = upernet.state_dict()
        if not keep_classes:
            logger.warning(
                f"from_upernet: the source classifiers have {source.num_labels} classes and the new model "
                f"{config.num_labels}; both classifiers are re-initialised and must be trained."
            )
            state = {k: v for k, v in state.items()
                     if not k.startswith(("decode_head.classifier.", "auxiliary_head.classifier."))}
        model._load_source_weights(state, "UperNet")
        return model.to(dtype=next(upernet.parameters()).dtype)

    def _load_source_weights(self, state: dict, source: str) -> None:
        """Load a source model's state dict; only the SSA classifier's layers (and a re-initialised classifier)
        may be missing, nothing may be left over."""
        result = self.load_state_dict(state, strict=False)
        fresh = ("decode_head.classifier.", "auxiliary_head.classifier.")
        unexpected_missing = [k for k in result.missing_keys if not k.startswith(fresh)]
        if unexpected_missing or result.unexpected_keys:
            raise ValueError(
                f"{source} weights do not fit the SSA model: missing {unexpected_missing}, "
                f"unexpected {result.unexpected_keys}."
            )


def _source_model(source, model_class: type, method: str):
    """A hub id or folder loaded as `model_class`, or an instance of it; anything else is a TypeError."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        source = model_class.from_pretrained(source)
    if not isinstance(source, model_class):
        raise TypeError(f"{method} expects a {model_class.__name__}, a hub id or a folder, got {type(source).__name__}.")
    return source


__all__ = [
    "SSAClassifier",
    "SSAClassifierOutput",
    "SSAForSemanticSegmentation",
    "SSAPreTrainedModel",
    "SSASemanticSegmenterOutput",
]
