"""Training losses of SSA-Seg (docs/method.md, sections 3 and 4): the eight terms, the boundary mask and a memory-bounded
cross-entropy/Dice on bilinearly upsampled logits.

Everything is vectorised over images and classes and runs on the input's device without host synchronisation.
This file is copied next to the weights by `save_pretrained` (remote code): it depends on torch and the ops file.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .ops_ssa import EPS as _EPS
from .ops_ssa import (
    at_least_float32,
    dice_class_indices,
    downsample_labels,
    float32_region,
    group_sum,
    per_class_sums,
    upsampled_segmentation_statistics,
)

# Canny's non-maximum suppression compares |dy| << 15 against |dx| * tan(22.5 deg) in fixed point (OpenCV canny.cpp).
_CANNY_SHIFT = 15
_CANNY_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)


def label_edges(label_map: torch.Tensor) -> torch.Tensor:
    """Edges of integer label maps exactly as OpenCV's `Canny(labels_u8, 0.1, 0.2)` finds them.

    OpenCV floors both thresholds to 0, so a pixel is an edge when its L1 Sobel magnitude is non-zero and it survives
    Canny's non-maximum suppression (integer arithmetic, replicate border for Sobel, zero magnitude outside the image);
    hysteresis then keeps every survivor. Values are used as they are (the original casts labels < 256 to uint8).

    Args:
        label_map: (B, h, w) integer labels.

    Returns:
        `torch.Tensor`: (B, h, w) bool edge map.
    """
    height, width = label_map.shape[-2:]
    padded = F.pad(label_map[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]  # (B, h+2, w+2)

    def window(dy: int, dx: int) -> torch.Tensor:
        return padded[:, dy : dy + height, dx : dx + width]

    # 3x3 Sobel; exact in float32 (|values| <= 4 * max label).
    grad_x = (window(0, 2) - window(0, 0)) + 2 * (window(1, 2) - window(1, 0)) + (window(2, 2) - window(2, 0))
    grad_y = (window(2, 0) - window(0, 0)) + 2 * (window(2, 1) - window(0, 1)) + (window(2, 2) - window(0, 2))
    grad_x, grad_y = grad_x.long(), grad_y.long()
    magnitude = grad_x.abs() + grad_y.abs()
    mag = F.pad(magnitude, (1, 1, 1, 1))  # zero magnitude outside the image

    def neighbour(dy: int, dx: int) -> torch.Tensor:
        return mag[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    abs_x = grad_x.abs()
    abs_y = grad_y.abs() << _CANNY_SHIFT
    tg22x = abs_x * _CANNY_TG22
    tg67x = tg22x + (abs_x << (_CANNY_SHIFT + 1))
    horizontal = abs_y < tg22x
    vertical = ~horizontal & (abs_y > tg67x)
    # Diagonal direction: up-left/down-right when the gradients share a sign, up-right/down-left otherwise.
    same_sign = (grad_x < 0) == (grad_y < 0)
    diag_up = torch.where(same_sign, neighbour(-1, -1), neighbour(-1, 1))
    diag_down = torch.where(same_sign, neighbour(1, 1), neighbour(1, -1))

    is_max_h = (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1))
    is_max_v = (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0))
    is_max_d = (magnitude > diag_up) & (magnitude > diag_down)
    is_max = torch.where(horizontal, is_max_h, torch.where(vertical, is_max_v, is_max_d))
    return (magnitude > 0) & is_max


def boundary_mask(label_map: torch.Tensor, frame_width: int = 6, dilation_size: int = 3) -> torch.Tensor:
    """Boundary bands (docs/method.md, section 4): Canny label edges, a zeroed border frame, then a square dilation.

    Args:
        label_map: (B, h, w) integer labels at feature resolution (ignore value included: its transitions count).
        frame_width: edges within this many pixels of the border are dropped before dilation.
        dilation_size: odd side of the all-ones dilation kernel.

    Returns:
        `torch.Tensor`: (B, h, w) bool mask.
    """
    edges = label_edges(label_map)
    height, width = edges.shape[-2:]
    rows = torch.arange(height, device=edges.device)
    cols = torch.arange(width, device=edges.device)
    inside_rows = (rows >= frame_width) & (rows < height - frame_width)
    inside_cols = (cols >= frame_width) & (cols < width - frame_width)
    edges = edges & inside_rows[:, None] & inside_cols[None, :]
    dilated = F.max_pool2d(edges[:, None].float(), dilation_size, stride=1, padding=dilation_size // 2)
    return dilated[:, 0] > 0


def _dice_count_normaliser(count: torch.Tensor) -> torch.Tensor:
    """Number of (image, class) Dice pairs; under DDP the mean over processes, as the original (docs/method.md, section 4)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world_size = torch.distributed.get_world_size()
        if world_size > 1:
            count = count.clone()
            torch.distributed.all_reduce(count)
            count = count / world_size
    return count.clamp(min=1.0)


class SSALoss(nn.Module):
    """The eight SSA training terms (docs/method.md, section 4), each computed once and weighted in one place.

    `forward` returns `(total, terms)`: `terms` maps each name to its weighted contribution, so that
    `total == sum(terms.values())`. All arithmetic is float32 regardless of autocast.
    """

    TERM_NAMES = (
        "main",
        "coarse",
        "teacher",
        "response_distillation",
        "dice_student",
        "dice_teacher",
        "semantic_distillation",
        "spatial_distillation",
    )

    def __init__(
        self,
        num_classes: int,
        weights: dict[str, float],
        ignore_index: int = 255,
        logit_scale: float = 15.0,
        label_mix: float = 0.5,
        boundary_frame_width: int = 6,
        boundary_dilation_size: int = 3,
        group_size: int | None = None,
    ):
        super().__init__()
        missing = set(self.TERM_NAMES) - set(weights)
        if missing:
            raise ValueError(f"Missing loss weights for {sorted(missing)}.")
        self.num_classes = num_classes
        self.weights = {name: float(weights[name]) for name in self.TERM_NAMES}
        self.ignore_index = ignore_index
        self.logit_scale = logit_scale
        self.label_mix = label_mix
        self.boundary_frame_width = boundary_frame_width
        self.boundary_dilation_size = boundary_dilation_size
        self.group_size = group_size

    def forward(
        self,
        logits: torch.Tensor,
        coarse_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        semantic_prototypes: torch.Tensor,
        teacher_semantic_prototypes: torch.Tensor,
        spatial_prototypes: torch.Tensor,
        teacher_spatial_prototypes: torch.Tensor,
        labels: torch.Tensor,
        labels_small: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            logits, coarse_logits, teacher_logits: (B, K, h, w) student O, coarse M and teacher Ô logits.
            semantic_prototypes, spatial_prototypes: (B, K, C) student S_p and P_p.
            teacher_semantic_prototypes, teacher_spatial_prototypes: (B, K, C) teacher Ŝ_p (per image) and P̂_p.
            labels: (B, H, W) class indices or the ignore index.
            labels_small: (B, h, w) the labels' legacy-nearest resize to the feature size (computed if omitted).
        """
        with float32_region(logits.device):
            logits, coarse_logits, teacher_logits = map(at_least_float32, (logits, coarse_logits, teacher_logits))
            if labels_small is None:
                labels_small = downsample_labels(labels, logits.shape[-2:])
            group_size = self.group_size or labels.shape[0]
            raw = {}
            class_counts = self._class_counts(labels, logits.dtype)  # (B, K) pixels per class at label resolution
            raw["main"], raw["dice_student"], _ = self._full_resolution_terms(logits, labels, class_counts)
            # The teacher's cross-entropy is a mean over valid pixels per group (below), not over all pixels.
            _, raw["dice_teacher"], teacher_nll = self._full_resolution_terms(teacher_logits, labels, class_counts)
            coarse_nll = upsampled_segmentation_statistics(coarse_logits, labels, self.ignore_index)[0]
            valid_pixels = (labels != self.ignore_index).flatten(1).sum(1).to(logits.dtype)
            raw["coarse"] = self._grouped_valid_mean(coarse_nll, valid_pixels, group_size)
            raw["teacher"] = self._grouped_valid_mean(teacher_nll, valid_pixels, group_size)
            raw["response_distillation"] = self.response_distillation(
                logits, teacher_logits.detach(), labels_small, group_size
            )
            raw["semantic_distillation"] = self.semantic_distillation(
                at_least_float32(semantic_prototypes), at_least_float32(teacher_semantic_prototypes).detach()
            )
            raw["spatial_distillation"] = self.spatial_distillation(
                at_least_float32(spatial_prototypes), at_least_float32(teacher_spatial_prototypes).detach()
            )
            terms = {name: self.weights[name] * raw[name] for name in self.TERM_NAMES}
            total = torch.stack(list(terms.values())).sum()
        return total, terms

    def _class_counts(self, labels, dtype):
        """(B, K) pixels per class: `per_class_sums` of ones."""
        ones = torch.ones(labels.shape[0], 1, labels[0].numel(), dtype=dtype, device=labels.device)
        return per_class_sums(ones, labels, self.num_classes, self.ignore_index)[..., 0]

    def _full_resolution_terms(self, logits, labels, class_counts):
        """Cross-entropy mean over all pixels (ignored ones in the denominator) and the sigmoid Dice loss."""
        present = class_counts > 0  # (B, K)
        dice_classes = dice_class_indices(present)
        nll, probability_sum, target_probability_sum = upsampled_segmentation_statistics(
            logits, labels, self.ignore_index, dice_classes
        )
        cross_entropy = nll.sum() / labels.numel()
        # Sigmoid Dice over (image, class present in the image), +1 smoothing, ignore pixels not masked.
        dice_present = present.gather(1, dice_classes).to(logits.dtype)
        intersection = target_probability_sum.gather(1, dice_classes)
        target_count = class_counts.gather(1, dice_classes)
        dice = 1 - (2 * intersection + 1) / (probability_sum + target_count + 1)
        dice_loss = (dice * dice_present).sum() / _dice_count_normaliser(present.sum().to(logits.dtype))
        return cross_entropy, dice_loss, nll

    @staticmethod
    def _grouped_valid_mean(nll, valid_pixels, group_size):
        """Mean over the valid pixels of each image group, averaged over groups; a group with none counts 0."""
        group_nll = group_sum(nll, group_size)
        group_pixels = group_sum(valid_pixels, group_size)
        return (group_nll / group_pixels.clamp(min=1)).mean()

    def response_distillation(self, logits, teacher_logits, labels_small, group_size):
        """Boundary- and category-aware distillation at feature resolution (teacher already detached)."""
        batch, num_classes = logits.shape[:2]
        log_probs = logits.flatten(2).log_softmax(1)  # (B, K, N)
        teacher_probs = teacher_logits.flatten(2).softmax(1)
        flat_labels = labels_small.flatten(1)
        valid = (flat_labels != self.ignore_index).to(log_probs.dtype)  # (B, N)
        target_log_probs = log_probs.gather(1, torch.where(flat_labels == self.ignore_index, 0, flat_labels)[:, None])
        # Soft target (1 - mix) * T + mix * one-hot; ignored pixels are masked by the entropy weight below.
        per_pixel = -(1 - self.label_mix) * (teacher_probs * log_probs).sum(1) - self.label_mix * target_log_probs[:, 0]
        entropy = -(teacher_probs * torch.log(teacher_probs + _EPS)).sum(1) * valid
        # The original runs Canny on uint8 maps whose ignore value is 255: edge strengths depend on that value.
        edge_labels = torch.where(labels_small == self.ignore_index, 255, labels_small)
        boundary = boundary_mask(edge_labels, self.boundary_frame_width, self.boundary_dilation_size)
        boundary = boundary.flatten(1).to(log_probs.dtype)
        weighted = entropy * per_pixel
        # Per (image, class) sums of [loss and weight] x [boundary, interior] and the valid count: (B, K, 5) -> (G, K, 5).
        pixel_values = torch.stack(
            [weighted * boundary, entropy * boundary, weighted * (1 - boundary), entropy * (1 - boundary), valid], dim=1
        )
        sums = group_sum(per_class_sums(pixel_values, labels_small, num_classes, self.ignore_index), group_size)
        present = sums[..., 4] > 0  # (G, K): the class occurs in the group
        boundary_term = sums[..., 0] / (sums[..., 1] + _EPS)
        interior_term = sums[..., 2] / (sums[..., 3] + _EPS)
        per_class = (boundary_term + interior_term) / 2 * present
        per_group = per_class.sum(-1) / (present.sum(-1) + _EPS)
        return per_group.mean()

    def semantic_distillation(self, semantic_prototypes, teacher_semantic_prototypes):
        """Positive excess of the student's class-relation softmax over the teacher's, off the diagonal."""
        batch, num_classes = semantic_prototypes.shape[:2]

        def relation(prototypes):
            unit = prototypes / (prototypes.norm(dim=-1, keepdim=True) + _EPS)
            return torch.softmax(self.logit_scale * unit @ unit.detach().transpose(1, 2), dim=-1)

        off_diagonal = 1 - torch.eye(num_classes, device=semantic_prototypes.device, dtype=semantic_prototypes.dtype)
        excess = torch.relu((relation(semantic_prototypes) - relation(teacher_semantic_prototypes)) * off_diagonal)
        return excess.sum() / (batch * num_classes)

    @staticmethod
    def spatial_distillation(spatial_prototypes, teacher_spatial_prototypes):
        """Cross-entropy between channel softmaxes of teacher and student position prototypes."""
        batch, num_classes = spatial_prototypes.shape[:2]
        teacher_probs = teacher_spatial_prototypes.softmax(-1)
        return -(teacher_probs * spatial_prototypes.log_softmax(-1)).sum() / (batch * num_classes)
