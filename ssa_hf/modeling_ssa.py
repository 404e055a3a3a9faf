"""SSA-Seg: an encoder (MiT, or any transformers backbone) and a decoder (SegFormer in the transformers or mmseg
layout, or UperNet) whose 1x1 classifier is replaced by the Semantic and Spatial Adaptive classifier (Ma, Ni, Chen,
NeurIPS 2024, arXiv:2405.06525).

Section numbers refer to docs/method.md. This file and its two siblings are copied next to the weights by
`save_pretrained` (remote code): they depend on torch and transformers only and import each other relatively.
"""

import math
import os
import re
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
from .loss_ssa import SSALoss
from .ops_ssa import (
    EPS,
    adaptive_avg_pool,
    at_least_float32,
    class_logits,
    class_softmax_means,
    cosine_logits,
    downsample_labels,
    float32_region,
    fused_feature,
    group_sum,
    host_checks_allowed,
    per_class_sums,
)

logger = logging.get_logger(__name__)



@dataclass
class SSAClassifierOutput(ModelOutput):
    """Outputs of [`SSAClassifier`][ssa_hf.SSAClassifier]. The teacher fields are set only when labels are given.

    Args:
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Adapted prediction O: cosine similarities of pixel embeddings and adapted prototypes, times the scale.
        coarse_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Coarse mask M of the fixed prototypes (after channel dropout in training).
        teacher_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Prediction Ô of the ground-truth-guided teacher.
        semantic_prototypes (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Student semantic prototypes S_p.
        spatial_prototypes (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Student spatial prototypes P_p.
        teacher_semantic_prototypes (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Teacher semantic prototypes Ŝ_p (shared within an image group).
        teacher_spatial_prototypes (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Teacher spatial prototypes P̂_p.
        semantic_centres (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Student semantic centres S_c (SEPA) before fusion.
        spatial_centres (`torch.FloatTensor` of shape `(batch_size, num_labels, channels)`):
            Student spatial centres P_c (SPPA) before fusion.
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
    """Output of [`SSAForSemanticSegmentation`][ssa_hf.SSAForSemanticSegmentation].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Sum of the eight weighted SSA terms (nine with the auxiliary head).
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height / 4, width / 4)`):
            SSA's adapted prediction. Upsample to the image size before taking the argmax (as SegFormer).
        coarse_logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height / 4, width / 4)`):
            Prediction of the fixed prototypes (the plain 1x1 classifier).
        teacher_logits (`torch.FloatTensor`, *optional*, returned when `labels` are given):
            Prediction of the ground-truth-guided teacher, same shape as `logits`.
        loss_terms (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` are given):
            Detached weighted terms `main`, `coarse`, `teacher`, `response_distillation`, `dice_student`,
            `dice_teacher`, `semantic_distillation`, `spatial_distillation` (and `auxiliary` with the auxiliary
            head); they sum to `loss`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            Encoder stage outputs of shape `(batch_size, hidden_size_i, height_i, width_i)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Encoder attention weights.
        logits_sizes (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*, returned for a padded batch):
            The (height, width) of each image's own logits, top left in `logits` and `coarse_logits`; the rest is
            padding (zeros). `SSAImageProcessor.post_process_semantic_segmentation` crops to it.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    coarse_logits: torch.FloatTensor | None = None
    teacher_logits: torch.FloatTensor | None = None
    loss_terms: dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    logits_sizes: torch.LongTensor | None = None


class SSAPrototypeFusion(nn.Module):
    """Fusion MLP of a centre and a prototype: Linear(2C -> C', no bias) -> ReLU -> Linear(C' -> C)."""

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.reduce = nn.Linear(2 * channels, hidden_channels, bias=False)
        self.activation = nn.ReLU()
        self.expand = nn.Linear(hidden_channels, channels)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """In the inputs' dtype (SSA's float32), whatever the dtype the weights are stored in."""
        joint = torch.cat([first, second], dim=-1)
        hidden = self.activation(F.linear(joint, self.reduce.weight.to(joint.dtype)))
        return F.linear(hidden, self.expand.weight.to(joint.dtype), self.expand.bias.to(joint.dtype))


class SSAClassifier(nn.Module):
    """The SSA pixel-level classifier: a drop-in replacement for a decoder's final 1x1 convolution.

    `weight` (K, C, 1, 1) and `bias` (K,) are that convolution's parameters, the fixed prototypes Wc, so a trained
    decoder's classifier loads into it unchanged. Given the decoder feature F (B, C, h, w) it returns SSA's adapted
    logits; given also the labels at feature resolution, the outputs of the ground-truth-guided teacher. `forward`
    is the method's sequence of steps (docs/method.md, sections 2 and 3):

    1. `coarse_mask`: M = Wc * F + b, the fixed prototypes' prediction;
    2. `semantic_prototype_adaptation` (SEPA): semantic centres S_c under M and prototypes S_p;
    3. `spatial_prototype_adaptation` (SPPA): position encoding P_f, spatial centres P_c and prototypes P_p;
    4. `adapted_logits`: V = proj(S_p + P_p), O = s * cos(F + P_f, V);
    5. `ground_truth_teacher` (training): the same with centres from the labels.
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
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, classifier_init_std: float = 0.01) -> None:
        """The initialisation of the original code: fixed prototypes N(0, classifier_init_std^2) with zero bias, the
        class position basis unit normal, every other layer PyTorch's default. Through transformers' init functions,
        which leave weights loaded from a checkpoint alone."""
        init.normal_(self.weight, std=classifier_init_std)
        init.zeros_(self.bias)
        for layer in self.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
                if layer.bias is not None:
                    fan_in = layer.weight[0].numel()
                    init.uniform_(layer.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            elif isinstance(layer, nn.Embedding):
                init.normal_(layer.weight)

    @property
    def fixed_prototypes(self) -> torch.Tensor:
        """Wc: (K, C)."""
        return self.weight.flatten(1)

    def forward(self, features: torch.Tensor, labels_small: torch.Tensor | None = None) -> SSAClassifierOutput:
        """
        SSA computes in at least float32 (float64 stays float64), with its weights cast to that dtype, whatever
        the precision the model is stored or autocast in; the logits come back in that dtype.

        Args:
            features: (B, C, h, w) decoder feature F, any floating dtype.
            labels_small: optional (B, h, w) labels at feature resolution; runs the teacher when given.
        """
        with float32_region(features.device):
            features = at_least_float32(features)
            batch, _, height, width = features.shape
            pixel_features = features.flatten(2)  # F: (B, C, N)
            coarse = self.coarse_mask(features)  # M: (B, K, N)
            semantic_centres, semantic_prototypes = self.semantic_prototype_adaptation(coarse, pixel_features)
            pixel_positions, spatial_centres, spatial_prototypes = self.spatial_prototype_adaptation(coarse, features)
            pixel_embeddings = pixel_features + pixel_positions  # U = F + P_f
            logits = self.adapted_logits(pixel_embeddings, semantic_prototypes, spatial_prototypes)
            output = SSAClassifierOutput(
                logits=logits.view(batch, -1, height, width),
                coarse_logits=coarse.view(batch, -1, height, width),
                semantic_prototypes=semantic_prototypes,
                spatial_prototypes=spatial_prototypes,
                semantic_centres=semantic_centres,
                spatial_centres=spatial_centres,
            )
            if labels_small is not None:
                teacher = self.ground_truth_teacher(pixel_features, pixel_positions, pixel_embeddings, labels_small)
                output.teacher_logits = teacher.pop("logits").view(batch, -1, height, width)
                for name, value in teacher.items():
                    setattr(output, name, value)
        return output

    def coarse_mask(self, features: torch.Tensor) -> torch.Tensor:
        """M = Wc F + b: the fixed prototypes' logits (B, K, N), after channel dropout in training (the original
        applies the decoder's dropout before its classifier)."""
        dtype = features.dtype
        return class_logits(self.dropout(features).flatten(2), self.fixed_prototypes.to(dtype), self.bias.to(dtype))

    def semantic_prototype_adaptation(self, coarse: torch.Tensor, pixel_features: torch.Tensor) -> tuple:
        """SEPA: S_c[k] = sum_n softmax_k(M)[k, n] F[:, n] / sum_n softmax_k(M)[k, n], the class centres of F under
        the coarse mask's class probabilities, and S_p = fuse(S_c, Wc). Returns (S_c, S_p), each (B, K, C)."""
        semantic_centres = class_softmax_means(coarse, pixel_features)
        prototypes = self.fixed_prototypes.to(coarse.dtype).expand(coarse.shape[0], -1, -1)
        return semantic_centres, self.semantic_fusion(semantic_centres, prototypes)

    def spatial_prototype_adaptation(self, coarse: torch.Tensor, features: torch.Tensor) -> tuple:
        """SPPA: the position encoding P_f = DWConv3x3(F), the spatial centres P_c[k] = sum_n softmax_n(M)[k, n]
        P_f[:, n] under a softmax over pixels, and P_p = fuse(E, P_c) with the class position basis E. Returns
        (P_f (B, C, N), P_c (B, K, C), P_p (B, K, C))."""
        conv, dtype = self.position_encoder, features.dtype
        pixel_positions = F.conv2d(features, conv.weight.to(dtype), conv.bias.to(dtype), padding=1,
                                   groups=conv.groups).flatten(2)
        spatial_centres = torch.bmm(coarse.softmax(dim=-1), pixel_positions.transpose(1, 2))
        basis = self.class_position_basis.weight.to(dtype).expand(coarse.shape[0], -1, -1)
        return pixel_positions, spatial_centres, self.spatial_fusion(basis, spatial_centres)

    def adapted_logits(self, pixel_embeddings: torch.Tensor, semantic_prototypes: torch.Tensor,
                       spatial_prototypes: torch.Tensor) -> torch.Tensor:
        """O = s * cos(U, V) with the adapted prototypes V = proj(S_p + P_p): (B, C, N), (B, K, C) x 2 -> (B, K, N)."""
        summed = semantic_prototypes + spatial_prototypes
        adapted_prototypes = F.linear(summed, self.prototype_projection.weight.to(summed.dtype))
        return cosine_logits(pixel_embeddings, adapted_prototypes, self.logit_scale)

    def ground_truth_teacher(self, pixel_features: torch.Tensor, pixel_positions: torch.Tensor,
                             pixel_embeddings: torch.Tensor, labels_small: torch.Tensor) -> dict:
        """The ground-truth-guided teacher: centres are the labels' class means, Ŝ_c of F pooled over each group of
        images (the per-GPU batch of the original) and P̂_c of P_f per image; a class absent from the labels falls
        back to its detached Wc / E row. Ŝ_p = fuse'(Ŝ_c, Wc), P̂_p = fuse'(P̂_c, E), Ô = s * cos(U, proj'(Ŝ_p + P̂_p)).
        Returns the teacher's logits (B, K, N), prototypes and centres by output field name."""
        batch = pixel_features.shape[0]
        dtype = pixel_features.dtype
        basis, prototypes = self.class_position_basis.weight.to(dtype), self.fixed_prototypes.to(dtype)  # E, Wc
        ones = pixel_features.new_ones(batch, 1, pixel_features.shape[-1])
        pixel_counts = per_class_sums(ones, labels_small, self.num_classes, self.ignore_index)  # (B, K, 1)
        feature_sums = per_class_sums(pixel_features, labels_small, self.num_classes, self.ignore_index)  # (B, K, C)
        position_sums = per_class_sums(pixel_positions, labels_small, self.num_classes, self.ignore_index)
        group_size = self.group_size or batch
        group_counts = group_sum(pixel_counts, group_size)
        semantic_centres = torch.where(
            group_counts > 0, group_sum(feature_sums, group_size) / (group_counts + EPS), prototypes.detach()
        )  # Ŝ_c: (G, K, C)
        group_prototypes = self.teacher_semantic_fusion(
            semantic_centres, prototypes.expand(semantic_centres.shape[0], -1, -1))  # Ŝ_p per group
        group_index = torch.arange(batch, device=pixel_features.device) // group_size
        semantic_prototypes = group_prototypes.index_select(0, group_index)  # (B, K, C)
        spatial_centres = torch.where(pixel_counts > 0, position_sums / (pixel_counts + EPS), basis.detach())  # P̂_c
        spatial_prototypes = self.teacher_spatial_fusion(spatial_centres, basis.expand(batch, -1, -1))  # P̂_p
        summed = semantic_prototypes + spatial_prototypes
        teacher_prototypes = F.linear(summed, self.teacher_prototype_projection.weight.to(dtype))
        return {
            "logits": cosine_logits(pixel_embeddings, teacher_prototypes, self.logit_scale),
            "teacher_semantic_prototypes": semantic_prototypes,
            "teacher_spatial_prototypes": spatial_prototypes,
            "teacher_semantic_centres": semantic_centres,
            "teacher_spatial_centres": spatial_centres,
        }


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


def _feature_map(hidden_state: torch.Tensor, reshape_last_stage: bool) -> torch.Tensor:
    """MiT's last stage as (B, C, h, w) when the encoder returns it as a (B, N, C) sequence (square images)."""
    if reshape_last_stage or hidden_state.ndim != 3:
        return hidden_state
    side = int(math.sqrt(hidden_state.shape[1]))
    return hidden_state.reshape(hidden_state.shape[0], side, side, -1).permute(0, 3, 1, 2)


class SSASegformerDecodeHead(SSADecodeHead):
    """SegFormer's all-MLP decoder in the transformers layout, ending in the SSA classifier.

    The feature SSA sees is taken after fuse, batch norm and activation, before dropout (docs/method.md, section 2); the dropout
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
        return fused_feature(folded, "linear", self.batch_norm, self.activation)


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
        return fused_feature(folded, "conv", fusion.norm, fusion.activation)


class SSAUperNetDecodeHead(SSADecodeHead):
    """UperNet (pyramid pooling 1, 2, 3, 6 on the last feature map + FPN) in the layout of transformers'
    `UperNetHead`, so its checkpoints load unchanged; F is the `fpn_bottleneck` output and the SSA
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
            bins = adaptive_avg_pool(top, pool.output_size)
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
    """The transformers base of SSA models: `SSAConfig`, the weight initialisation (`_init_weights`), gradient
    checkpointing of the encoder, and `base_model_prefix = "encoder"`."""

    config_class = SSAConfig
    config: SSAConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True  # the encoder's blocks (transformers' GradientCheckpointingLayer)
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """SegFormer's init for encoder and decoder, then the SSA classifier's own (`SSAClassifier.reset_parameters`,
        with `config.classifier_init_std`). transformers initialises children before their parent, so the classifier's
        init is the last word on its layers; weights loaded from a checkpoint are skipped by both."""
        super()._init_weights(module)
        if isinstance(module, SSAClassifier):
            module.reset_parameters(self.config.classifier_init_std)


# transformers' attribute names for the encoder, as they appear in SegFormer and UperNet checkpoints (and in SSA
# folders saved before the encoder had one name) -> the SSA model's one name.
_LEGACY_ENCODER_PREFIXES = ("segformer.", "backbone.")
_ENCODER_KEY_MAPPING = {"^" + re.escape(legacy): "encoder." for legacy in _LEGACY_ENCODER_PREFIXES}


def _map_encoder_keys(module, state_dict, prefix, *args) -> None:
    """`load_state_dict` pre-hook: the same mapping as `_ENCODER_KEY_MAPPING`, for state dicts loaded directly
    (a transformers SegFormer/UperNet's, or a training checkpoint written before the rename)."""
    for legacy in _LEGACY_ENCODER_PREFIXES:
        for key in [k for k in state_dict if k.startswith(prefix + legacy)]:
            state_dict[prefix + "encoder." + key[len(prefix + legacy):]] = state_dict.pop(key)


def _stage_margins(encoder, height: int, width: int) -> list[int]:
    """For each MiT stage, min(stage height, stage width) minus its sequence-reduction kernel (negative: too small)."""
    margins = []
    for kernel, stride, reduction in zip(encoder.patch_sizes, encoder.strides, encoder.sr_ratios):
        height = (height + 2 * (kernel // 2) - kernel) // stride + 1
        width = (width + 2 * (kernel // 2) - kernel) // stride + 1
        margins.append(min(height, width) - reduction)
    return margins


def _unpadded_sizes(pixel_mask: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 2) height and width of each image's pixels in a batch padded at the bottom and right; a mask that is not
    such a top-left rectangle is refused."""
    if pixel_mask.shape != (pixel_values.shape[0], *pixel_values.shape[2:]):
        expected = (pixel_values.shape[0], *pixel_values.shape[2:])
        raise ValueError(f"pixel_mask must have shape (batch, height, width) = {expected}, got "
                         f"{tuple(pixel_mask.shape)}.")
    mask = pixel_mask.bool()
    sizes = torch.stack([mask.any(2).sum(1), mask.any(1).sum(1)], dim=1)  # (B, 2)
    rows = torch.arange(mask.shape[1], device=mask.device)[None, :, None] < sizes[:, 0, None, None]
    columns = torch.arange(mask.shape[2], device=mask.device)[None, None, :] < sizes[:, 1, None, None]
    if bool((mask != (rows & columns)).any() or (sizes == 0).any()):
        raise ValueError("pixel_mask must mark one non-empty top-left rectangle of image pixels per image (padding "
                         "at the bottom and right, as SSAImageProcessor pads).")
    return sizes


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

    # Padded batches (`pixel_mask`) are segmented image by image: `pipeline(batch_size=N)` pads mixed sizes for it.
    accepts_padded_batches = True

    def __init__(self, config: SSAConfig):
        super().__init__(config)
        # One encoder attribute whatever the backbone; transformers' names for it (SegFormer's `segformer.`,
        # UperNet's `backbone.`) are mapped onto it when weights load (`_ENCODER_KEY_MAPPING`).
        if self.encoder_is_mit:  # MiT: transformers' SegFormer encoder, which returns every stage's hidden states
            self.encoder = SegformerModel(config.backbone_config)
            in_channels = list(config.backbone_config.hidden_sizes)
        else:  # any AutoBackbone (Swin, ConvNeXt, ResNet, DINOv2, ...), as transformers' UperNet builds it
            self.encoder = load_backbone(config)
            in_channels = list(self.encoder.channels)
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
        self._register_load_state_dict_pre_hook(_map_encoder_keys, with_module=True)
        self.post_init()

    @property
    def encoder_is_mit(self) -> bool:
        """MiT (transformers' SegFormer encoder, all stages' hidden states) rather than an AutoBackbone."""
        return self.config.backbone_config.model_type == "segformer"

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "SSAForSemanticSegmentation":
        """`PreTrainedModel.from_pretrained`, also reading folders saved with transformers' encoder names
        (`segformer.`/`backbone.`, as earlier ssa-hf versions saved them); the model saves under `encoder.` again."""
        kwargs["key_mapping"] = {**_ENCODER_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
        loaded = super().from_pretrained(*args, **kwargs)
        # transformers would reverse the mapping when saving; saved keys are this model's own names instead.
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # a tuple with output_loading_info=True
        model._weight_conversions = None
        return loaded

    def activation_checkpointing_enable(self, *args, **kwargs):
        """Recompute the encoder's blocks in the backward pass (transformers' `GradientCheckpointingLayer`s), where
        the encoder allows it: MiT (SegFormer), Swin and DINOv2 do, transformers' ConvNeXt and ResNet backbones not."""
        if not getattr(self.encoder, "supports_gradient_checkpointing", False):
            raise ValueError(f"the {type(self.encoder).__name__} encoder does not support gradient checkpointing in "
                             f"transformers (MiT, Swin and DINOv2 encoders do).")
        return super().activation_checkpointing_enable(*args, **kwargs)

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
        if self.encoder_is_mit and host_checks_allowed():
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
        if self.config.validate_labels and host_checks_allowed():  # a host read: eager only
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
        pixel_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SSASemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images, e.g. from `SSAImageProcessor`. Any size; SegFormer pads internally.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class indices or `config.semantic_loss_ignore_index`. When given, the teacher runs and the loss is
                returned; the losses work at the labels' resolution (normally the image size).
            output_hidden_states (`bool`, *optional*): return the encoder's stage outputs.
            output_attentions (`bool`, *optional*): return the encoder's attention weights.
            return_dict (`bool`, *optional*): a `SSASemanticSegmenterOutput` rather than a tuple.
            pixel_mask (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                1 on image pixels, 0 on padding (bottom and right), as `SSAImageProcessor` returns it for images of
                different sizes. Each image is then segmented alone on its own pixels: the prototypes SSA adapts to
                an image never see padding, and the masks are those of one image at a time. Inference only.

        Returns:
            `SSASemanticSegmenterOutput` (or a tuple without `return_dict`).
        """
        if pixel_mask is not None:
            sizes = _unpadded_sizes(pixel_mask, pixel_values)
            if bool((sizes != torch.tensor(pixel_values.shape[2:], device=sizes.device)).any()):
                if labels is not None or output_hidden_states or output_attentions:
                    raise ValueError("a padded batch (pixel_mask with padding) is for inference: labels, hidden "
                                     "states and attentions need images of one size (training uses crops).")
                return self._forward_padded_batch(pixel_values, sizes, return_dict)
        self._check_inputs(pixel_values, labels)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.encoder_is_mit:
            encoder_outputs = self.encoder(
                pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True
            )
            feature_maps = encoder_hidden_states = encoder_outputs.hidden_states
        else:
            encoder_outputs = self.encoder.forward_with_filtered_kwargs(
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

    def _forward_padded_batch(self, pixel_values: torch.Tensor, sizes: torch.Tensor, return_dict: bool | None):
        """Each image runs alone on its own pixels (so its logits are bitwise those of a batch of one); the logits
        are placed top left in a zero-padded batch, with each image's logits size in `logits_sizes`."""
        outputs = [self(pixel_values=pixel_values[index : index + 1, :, :height, :width], return_dict=True)
                   for index, (height, width) in enumerate(sizes.tolist())]
        logits_sizes = torch.tensor([list(output.logits.shape[-2:]) for output in outputs])
        height, width = logits_sizes.max(0).values.tolist()

        def padded(name: str) -> torch.Tensor:
            return torch.cat([F.pad(getattr(output, name), (0, width - getattr(output, name).shape[-1],
                                                             0, height - getattr(output, name).shape[-2]))
                              for output in outputs])

        output = SSASemanticSegmenterOutput(logits=padded("logits"), coarse_logits=padded("coarse_logits"),
                                            logits_sizes=logits_sizes.to(pixel_values.device))
        return output if return_dict is not False else output.to_tuple()

    @classmethod
    def from_segformer(
        cls,
        segformer: "str | SegformerForSemanticSegmentation",
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **config_kwargs,
    ) -> "SSAForSemanticSegmentation":
        """Put SSA on a SegFormer: encoder, decoder and 1x1 classifier (the fixed prototypes) are copied; the SSA
        layers start fresh (docs/method.md, section 1).

        Args:
            segformer: a hub id, a local folder, or a `SegformerForSemanticSegmentation` instance.
            num_labels / id2label: a new class set; the classifier is then re-initialised (logged).
            config_kwargs: other `SSAConfig` fields, e.g. `teacher_group_size=4`.

        Save `SSAImageProcessor.from_source(segformer)` beside the model, so that the folder preprocesses as its
        source did (`ssa-seg convert` saves both).
        """
        return cls._from_transformers_segmenter(segformer, "segformer", num_labels, id2label, config_kwargs)

    @classmethod
    def from_upernet(
        cls,
        upernet: "str | UperNetForSemanticSegmentation",
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        **config_kwargs,
    ) -> "SSAForSemanticSegmentation":
        """Put SSA on a transformers UperNet (Swin, ConvNeXt, ... backbone): backbone, UperNet decoder, auxiliary head
        and the 1x1 classifier (the fixed prototypes) are copied; the SSA layers start fresh (docs/method.md, section 1).

        Args:
            upernet: a hub id, a local folder, or an `UperNetForSemanticSegmentation` instance.
            num_labels / id2label: a new class set; both classifiers are then re-initialised (logged).
            config_kwargs: other `SSAConfig` fields, e.g. `teacher_group_size=4`.

        Save `SSAImageProcessor.from_source(upernet)` beside the model, so that the folder preprocesses as its
        source did (`ssa-seg convert` saves both).
        """
        return cls._from_transformers_segmenter(upernet, "upernet", num_labels, id2label, config_kwargs)

    @classmethod
    def _from_transformers_segmenter(cls, source, model_type: str, num_labels, id2label, config_kwargs):
        """The one path behind `from_segformer` and `from_upernet`: load the source (a clear error when it is another
        kind of model), derive the SSA config, and copy every weight but the SSA layers (and the classifiers, for a
        new class set)."""
        model_class, ssa_config, name = _SOURCE_SEGMENTERS[model_type]
        config_kwargs = {"source_checkpoint": checkpoint_name(source), **config_kwargs}
        source = _source_model(source, model_class, model_type, name)
        config = ssa_config(source.config, num_labels, id2label, config_kwargs)
        model = cls(config)
        state = source.state_dict()
        if config.num_labels != source.config.num_labels:
            logger.warning(
                f"from_{model_type}: the source classifier has {source.config.num_labels} classes and the new model "
                f"{config.num_labels}; the classifiers (fixed prototypes) are re-initialised and must be trained."
            )
            state = {k: v for k, v in state.items()
                     if not k.startswith(("decode_head.classifier.", "auxiliary_head.classifier."))}
        model._load_source_weights(state, name)
        return model.to(dtype=next(source.parameters()).dtype)

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


def _segformer_ssa_config(source: SegformerConfig, num_labels, id2label, config_kwargs) -> SSAConfig:
    return SSAConfig.from_segformer_config(source, num_labels=num_labels, id2label=id2label, **config_kwargs)


def _upernet_ssa_config(source, num_labels, id2label, config_kwargs) -> SSAConfig:
    if source.backbone_config is None:
        raise ValueError("This UperNet names its backbone by a timm/hub string, not a backbone_config; "
                         "only transformers backbones are supported.")
    if id2label is None and num_labels in (None, source.num_labels):
        id2label = source.id2label
    elif id2label is None:
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    id2label = {int(k): v for k, v in id2label.items()}
    return SSAConfig(
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


# model_type of a transformers segmenter -> (its class, its SSA config, its name in messages)
_SOURCE_SEGMENTERS = {
    "segformer": (SegformerForSemanticSegmentation, _segformer_ssa_config, "SegFormer"),
    "upernet": (UperNetForSemanticSegmentation, _upernet_ssa_config, "UperNet"),
}


def checkpoint_name(source) -> str | None:
    """What `SSAConfig.source_checkpoint` records for a source: a hub id as given, `local:<name>` for a local folder
    or file (never a path of this machine), or the same for the `_name_or_path` of a model instance's config."""
    if not (isinstance(source, (str, bytes)) or hasattr(source, "__fspath__")):
        source = getattr(getattr(source, "config", None), "_name_or_path", None) or None
        if source is None:
            return None
    text = os.fsdecode(source)
    return f"local:{os.path.basename(os.path.normpath(text))}" if os.path.exists(text) else text


def _source_model(source, model_class: type, model_type: str, name: str):
    """A hub id or folder of a `model_type` model loaded as `model_class`, or an instance of it. Another kind of
    model is refused by name, before any weights are read."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from transformers import AutoConfig

        found = AutoConfig.from_pretrained(source).model_type
        if found != model_type:
            raise ValueError(f"{source} is a '{found}' model, not a {name}; from_{model_type} takes a {name} "
                             f"(hub id, folder or {model_class.__name__}).")
        source = model_class.from_pretrained(source)
    if not isinstance(source, model_class):
        raise TypeError(f"from_{model_type} expects a {model_class.__name__}, a hub id or a folder, got "
                        f"{type(source).__name__}.")
    return source


__all__ = [
    "SSAClassifier",
    "SSAClassifierOutput",
    "SSAForSemanticSegmentation",
    "SSAPreTrainedModel",
    "SSASemanticSegmenterOutput",
]
