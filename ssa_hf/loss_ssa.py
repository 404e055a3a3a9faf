"""Training losses of SSA-Seg (spec sections 3.1 and 4): the eight terms, the boundary mask and a memory-bounded
cross-entropy/Dice on bilinearly upsampled logits.

Everything is vectorised over images and classes and runs on the input's device without host synchronisation.
This file is copied next to the weights by `save_pretrained` (remote code): it depends on torch and the ops file.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ops_ssa import EPS as _EPS
from .ops_ssa import at_least_float32, downsample_labels, float32_region, group_sum, per_class_sums

# Canny's non-maximum suppression compares |dy| << 15 against |dx| * tan(22.5 deg) in fixed point (OpenCV canny.cpp).
_CANNY_SHIFT = 15
_CANNY_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)
# Elements of one chunk of upsampled logits (rows x batch x classes x width): about 8 MB in float32.
_CHUNK_ELEMENTS = 1 << 21


def label_edges(label_map: torch.Tensor) -> torch.Tensor:
    """Edges of integer label maps exactly as OpenCV's `Canny(labels_u8, 0.1, 0.2)` finds them.

    OpenCV floors both thresholds to 0, so a pixel is an edge when its L1 Sobel magnitude is non-zero and it survives
    Canny's non-maximum suppression (integer arithmetic, replicate border for Sobel, zero magnitude outside the image);
    hysteresis then keeps every survivor. Values are used as they are (the original casts labels < 256 to uint8).

    Args:
        label_map: (B, h, w) integer labels.
    Returns:
        (B, h, w) bool edge map.
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
    """Boundary bands of spec section 4.4: Canny label edges, a zeroed border frame, then a square dilation.

    Args:
        label_map: (B, h, w) integer labels at feature resolution (ignore value included: its transitions count).
        frame_width: edges within this many pixels of the border are dropped before dilation.
        dilation_size: odd side of the all-ones dilation kernel.
    Returns:
        (B, h, w) bool mask.
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


def _align_corners_taps(in_size: int, out_size: int, device: torch.device, dtype: torch.dtype):
    """Source indices and weights of a 1-D bilinear resize with align_corners=True, in PyTorch's arithmetic
    (float32 for half, bfloat16 and float32 inputs, float64 for float64)."""
    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    source = torch.arange(out_size, device=device, dtype=compute_dtype) * torch.tensor(scale, dtype=compute_dtype)
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    high_weight = (source - low.to(compute_dtype)).to(dtype)
    return low, high, 1 - high_weight, high_weight


class _UpsampledSegmentationStatistics(torch.autograd.Function):
    """Cross-entropy and sigmoid-Dice sums of `interpolate(logits, labels' size, bilinear, align_corners=True)`.

    The upsampled logits (batch x classes x H x W, the largest tensor of SSA training) are never stored: forward and
    backward walk over chunks of output rows and rebuild them from the logits resized along the width only (a quarter
    of the full size, kept for the backward pass). The width resize and its adjoint are one 1-D linear resize each
    (two taps: far cheaper than a GEMM against the dense interpolation matrix); rows come first in memory, so each
    output row is a lerp of two contiguous input rows written into a reused chunk buffer, and its adjoint two in-place
    row updates.

    Returns, per image b: `nll[b]` = sum over valid pixels of -log softmax_K(z)[label]; per (b, j) with
    k = dice_classes[b, j]: `probability_sum` = sum over all pixels of sigmoid(z_k); per (b, k):
    `target_probability_sum` = sum of sigmoid(z_k) over the pixels labelled k.
    """

    @staticmethod
    def forward(ctx, logits, labels, ignore_index: int, dice_classes):
        batch, num_classes, height, width = logits.shape
        out_width = labels.shape[-1]
        # (h, B, K, w) -> (h, B, K, W): rows first, one 1-D linear resize for the width (the same arithmetic as
        # the width pass of 2-D bilinear resizing).
        rows = logits.permute(2, 0, 1, 3).reshape(1, -1, width)
        width_resized = F.interpolate(rows, size=out_width, mode="linear", align_corners=True).view(
            height, batch, num_classes, out_width
        )
        nll = logits.new_zeros(batch)
        num_dice = 0 if dice_classes is None else dice_classes.shape[1]
        probability_sum = logits.new_zeros(batch, num_dice)
        target_probability_sum = logits.new_zeros(batch, num_classes)
        for chunk in _row_chunks(width_resized, labels, ignore_index):
            target_index = chunk.target[:, :, None]  # (r, B, 1, W)
            target_log_probs = chunk.logits.log_softmax(dim=2).gather(2, target_index)[:, :, 0]
            nll -= (target_log_probs * chunk.valid).sum((0, 2))
            if dice_classes is not None:
                dice_index = dice_classes[None, :, :, None].expand(chunk.logits.shape[0], -1, -1, out_width)
                probability_sum += torch.sigmoid(chunk.logits.gather(2, dice_index)).sum((0, 3))
                target_probs = torch.sigmoid(chunk.logits.gather(2, target_index)[:, :, 0]) * chunk.valid
                # A scatter-add over flat (image, class) slots: summed in a fixed order on the CPU, where an
                # accumulating index_put_ sums in thread order (training would not repeat bitwise).
                slots = (chunk.image_index * num_classes + chunk.target).flatten()
                target_probability_sum.view(-1).scatter_add_(0, slots, target_probs.flatten())
        ctx.save_for_backward(width_resized, labels, dice_classes)
        ctx.in_width = width
        ctx.ignore_index = ignore_index
        return nll, probability_sum, target_probability_sum

    @staticmethod
    def backward(ctx, grad_nll, grad_probability_sum, grad_target_probability_sum):
        width_resized, labels, dice_classes = ctx.saved_tensors
        height, batch, num_classes, out_width = width_resized.shape
        grad_width_resized = torch.zeros_like(width_resized)
        for chunk in _row_chunks(width_resized, labels, ctx.ignore_index):
            pixel_weight = (grad_nll[None, :, None] * chunk.valid)[:, :, None]  # (r, B, 1, W)
            grad_chunk = torch.softmax(chunk.logits, dim=2).mul_(pixel_weight)
            target_index = chunk.target[:, :, None]
            grad_chunk.scatter_add_(2, target_index, -pixel_weight)
            if dice_classes is not None:
                dice_index = dice_classes[None, :, :, None].expand(grad_chunk.shape[0], -1, -1, out_width)
                probs = torch.sigmoid(chunk.logits.gather(2, dice_index))  # (r, B, m, W)
                sigmoid_slope = torch.addcmul(probs, probs, probs, value=-1)  # sigma' = sigma - sigma^2
                grad_chunk.scatter_add_(2, dice_index, sigmoid_slope.mul_(grad_probability_sum[None, :, :, None]))
                target_probs = torch.sigmoid(chunk.logits.gather(2, target_index))  # (r, B, 1, W)
                target_weight = grad_target_probability_sum[chunk.image_index, chunk.target] * chunk.valid
                grad_chunk.scatter_add_(2, target_index, (target_probs - target_probs**2) * target_weight[:, :, None])
            # Adjoint of the row lerp.
            for grad_row, low, high, high_weight in zip(grad_chunk, *chunk.taps):
                grad_width_resized[low].add_(grad_row, alpha=1 - high_weight)
                grad_width_resized[high].add_(grad_row, alpha=high_weight)
        grad_rows = torch.ops.aten.upsample_linear1d_backward(
            grad_width_resized.view(1, -1, out_width), [out_width], [1, height * batch * num_classes, ctx.in_width],
            True, None,
        )  # adjoint of the width resize
        grad_logits = grad_rows.view(height, batch, num_classes, -1)
        return grad_logits.permute(1, 2, 0, 3), None, None, None


@dataclass
class _RowChunk:
    """Upsampled logits (r, B, K, W) of some output rows, their labels (r, B, W) and the row taps (Python lists)."""

    logits: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    image_index: torch.Tensor
    taps: tuple[list, list, list]


def _row_chunks(width_resized, labels, ignore_index):
    """Yield `_RowChunk`s covering the output rows; the chunk buffer is reused between chunks."""
    height, batch, num_classes, out_width = width_resized.shape
    out_height = labels.shape[-2]
    # Row taps from the CPU as Python numbers (same float arithmetic as on the device): no device sync.
    low, high, _, high_weight = _align_corners_taps(height, out_height, torch.device("cpu"), width_resized.dtype)
    low, high, high_weight = low.tolist(), high.tolist(), high_weight.tolist()
    chunk_rows = max(1, _CHUNK_ELEMENTS // max(1, batch * num_classes * out_width))
    buffer = width_resized.new_empty(min(chunk_rows, out_height), batch, num_classes, out_width)
    image_index = torch.arange(batch, device=labels.device)[None, :, None]  # broadcasts to (r, B, W)
    for start in range(0, out_height, chunk_rows):
        stop = min(start + chunk_rows, out_height)
        chunk = buffer[: stop - start]
        for row, output_row in enumerate(range(start, stop)):
            torch.lerp(width_resized[low[output_row]], width_resized[high[output_row]], high_weight[output_row],
                       out=chunk[row])
        label_rows = labels[:, start:stop].transpose(0, 1)  # (r, B, W)
        valid = label_rows != ignore_index
        taps = (low[start:stop], high[start:stop], high_weight[start:stop])
        yield _RowChunk(chunk, torch.where(valid, label_rows, 0), valid.to(chunk.dtype), image_index, taps)


def upsampled_segmentation_statistics(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, dice_classes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image cross-entropy sum and sigmoid sums of logits upsampled to the labels' size.

    Equal to `F.interpolate(logits, labels.shape[-2:], mode="bilinear", align_corners=True)` followed by the sums,
    in bounded memory. Labels must hold class indices or `ignore_index`.

    Args:
        dice_classes: optional (B, m) class indices per image whose sigmoid sums are wanted (the Dice terms).
    Returns:
        nll (B,); probability_sum (B, m): sum over all pixels of sigmoid(z) for `dice_classes`;
        target_probability_sum (B, K): sum of sigmoid(z_k) over the pixels labelled k (zeros without `dice_classes`).
    """
    return _UpsampledSegmentationStatistics.apply(logits, labels, ignore_index, dice_classes)


def _dice_count_normaliser(count: torch.Tensor) -> torch.Tensor:
    """Number of (image, class) Dice pairs; under DDP the mean over processes, as the original (spec 4.5)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world_size = torch.distributed.get_world_size()
        if world_size > 1:
            count = count.clone()
            torch.distributed.all_reduce(count)
            count = count / world_size
    return count.clamp(min=1.0)


class SSALoss(nn.Module):
    """The eight SSA training terms (spec section 4), each computed once and weighted in one place.

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
            raw["teacher"], raw["dice_teacher"], teacher_nll = self._full_resolution_terms(
                teacher_logits, labels, class_counts
            )
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
        flat = labels.flatten(1)
        flat = torch.where(flat == self.ignore_index, self.num_classes, flat)
        counts = torch.zeros(labels.shape[0], self.num_classes + 1, dtype=dtype, device=labels.device)
        return counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=dtype))[:, : self.num_classes]

    def _full_resolution_terms(self, logits, labels, class_counts):
        """Cross-entropy mean over all pixels (ignored ones in the denominator) and the sigmoid Dice loss."""
        present = class_counts > 0  # (B, K)
        if labels.device.type == "cpu":
            # Host reads of CPU tensors synchronise nothing: restrict the Dice sigmoids to the classes present.
            num_dice = max(1, int(present.sum(1).max()))
            dice_classes = torch.argsort(present.to(torch.uint8), dim=1, descending=True, stable=True)[:, :num_dice]
        else:
            dice_classes = torch.arange(self.num_classes, device=labels.device).expand(labels.shape[0], -1)
        nll, probability_sum, target_probability_sum = upsampled_segmentation_statistics(
            logits, labels, self.ignore_index, dice_classes
        )
        cross_entropy = nll.sum() / labels.numel()
        # Sigmoid Dice over (image, class present in the image), +1 smoothing, ignore pixels not masked (spec 4.5).
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
        """Boundary- and category-aware distillation of spec 4.3 at feature resolution (teacher already detached)."""
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
        # Per (image, class) sums of [loss and weight] x [boundary, interior]: (B, K, 4) -> (G, K, 4).
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
        """Positive excess of the student's class-relation softmax over the teacher's, off the diagonal (spec 4.6)."""
        batch, num_classes = semantic_prototypes.shape[:2]

        def relation(prototypes):
            unit = prototypes / (prototypes.norm(dim=-1, keepdim=True) + _EPS)
            return torch.softmax(self.logit_scale * unit @ unit.detach().transpose(1, 2), dim=-1)

        off_diagonal = 1 - torch.eye(num_classes, device=semantic_prototypes.device, dtype=semantic_prototypes.dtype)
        excess = torch.relu((relation(semantic_prototypes) - relation(teacher_semantic_prototypes)) * off_diagonal)
        return excess.sum() / (batch * num_classes)

    @staticmethod
    def spatial_distillation(spatial_prototypes, teacher_spatial_prototypes):
        """Cross-entropy between channel softmaxes of teacher and student position prototypes (spec 4.7)."""
        batch, num_classes = spatial_prototypes.shape[:2]
        teacher_probs = teacher_spatial_prototypes.softmax(-1)
        return -(teacher_probs * spatial_prototypes.log_softmax(-1)).sum() / (batch * num_classes)
