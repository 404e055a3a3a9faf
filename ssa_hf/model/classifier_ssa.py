"""The SSA classifier (Ma, Ni, Chen, NeurIPS 2024, arXiv:2405.06525): the drop-in replacement of a decoder's final
1x1 convolution, with the paper's steps as named methods (docs/method.md, sections 2 and 3). It takes any decoder's
feature map; `decoders_ssa.py` puts it behind each decoder.

Remote code: copied next to the weights by `save_pretrained`; depends on torch and transformers only.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .ops_ssa import (
    EPS,
    at_least_float32,
    class_logits,
    class_softmax_means,
    cosine_logits,
    float32_region,
    group_sum,
    per_class_sums,
)


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


class PlainClassifier(nn.Module):
    """The decoder's original classifier, which SSA replaces: channel dropout and a 1x1 convolution. Its `weight` and
    `bias` are named as the SSA classifier's fixed prototypes, so a trained baseline loads into SSA unchanged. It
    returns its logits both as `logits` and as `coarse_logits`."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(num_classes))
        self.dropout = nn.Dropout2d(dropout)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, classifier_init_std: float = 0.01) -> None:
        """mmseg's `conv_seg` init: N(0, classifier_init_std^2), zero bias (as SSA's fixed prototypes)."""
        init.normal_(self.weight, std=classifier_init_std)
        init.zeros_(self.bias)

    def forward(self, features: torch.Tensor, labels_small: torch.Tensor | None = None) -> SSAClassifierOutput:
        """(B, C, h, w) -> (B, K, h, w) logits; `labels_small` is accepted for the SSA classifier's signature."""
        logits = F.conv2d(self.dropout(features), self.weight.to(features.dtype), self.bias.to(features.dtype))
        return SSAClassifierOutput(logits=logits, coarse_logits=logits)


def build_classifier(config) -> "SSAClassifier | PlainClassifier":
    """The classifier of an `SSAConfig`: SSA with the decoder width, classes, scale, fusion width, dropout, ignore
    index and teacher group size; or, with `classifier_type="plain"`, the original 1x1 classifier."""
    if config.classifier_type == "plain":
        return PlainClassifier(config.decoder_hidden_size, config.num_labels, config.classifier_dropout_prob)
    return SSAClassifier(
        channels=config.decoder_hidden_size,
        num_classes=config.num_labels,
        logit_scale=config.logit_scale,
        fusion_hidden_ratio=config.fusion_hidden_ratio,
        dropout=config.classifier_dropout_prob,
        ignore_index=config.semantic_loss_ignore_index,
        group_size=config.teacher_group_size,
    )


__all__ = ["PlainClassifier", "SSAClassifier", "SSAClassifierOutput", "SSAPrototypeFusion", "build_classifier"]
