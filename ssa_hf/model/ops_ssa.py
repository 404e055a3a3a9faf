"""SSA's tensor operations: the helpers that the classifier and the losses share, and the few kernels tuned for one
device or runtime, each beside its plain reference.

Only this file branches on ONNX export (the model calls these ops and reads as the method, docs/method.md), and only
where the exported graph needs it: pooling bins that follow the input size, and the ONNX decoder layout. A tuned
variant stays only where `benchmarks/bench_ops.py` measures a gain of at least 10% on the whole forward pass, quoted
in its docstring; the CPU tricks of earlier versions (a shift-add depth-wise convolution, a grouped-convolution
similarity product, blocked pixel norms, an in-place decoder sum) and two ONNX layouts did not, and were dropped.
`tests/test_ops.py` checks each op against a plain loop or its reference.

Remote code: copied next to the weights by `save_pretrained`; depends on torch only.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-12
# Elements of one chunk of upsampled logits (rows x batch x classes x width): about 8 MB in float32.
_CHUNK_ELEMENTS = 1 << 21


# --- precision ------------------------------------------------------------------------------------------------------


def float32_region(device: torch.device):
    """Context that turns autocast off on `device`: SSA's similarities and losses are computed in float32 (or
    float64), whatever the precision of the encoder and decoder."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half-precision tensors to float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def host_checks_allowed() -> bool:
    """Whether input checks that read values or shapes on the host may run: in eager mode yes; under
    `torch.compile` no, since a host read breaks the graph (the compiled path trusts its inputs)."""
    return not torch.compiler.is_compiling()


# --- labels and per-class sums (shared by the teacher and the losses) -------------------------------------------------


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Legacy nearest resize of labels to the feature size: Y[b, floor(i * H / h), floor(j * W / w)], as the original
    code's `F.interpolate(..., mode="nearest")`."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def per_class_sums(values: torch.Tensor, label_map: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Sums of per-pixel values over the pixels of each class: (B, D, N) values, (B, ...) labels -> (B, K, D).

    An index-add of pixel rows into (image, class) rows (N * D work, not the K * N * D of a one-hot product; summed
    in a fixed order on the CPU); ignored pixels go to a spare slot that is dropped.
    """
    batch, depth = values.shape[:2]
    labels = label_map.reshape(batch, -1)
    slots = torch.where(labels == ignore_index, num_classes, labels)
    slots = slots + torch.arange(batch, device=labels.device)[:, None] * (num_classes + 1)  # (image, class) rows
    sums = values.new_zeros(batch * (num_classes + 1), depth)
    sums.index_add_(0, slots.flatten(), values.transpose(1, 2).reshape(-1, depth))
    return sums.view(batch, num_classes + 1, depth)[:, :num_classes]


def group_sum(per_image: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sum consecutive images in groups of `group_size` (the last group may be smaller): (B, ...) -> (G, ...)."""
    num_groups = -(-per_image.shape[0] // group_size)
    group_index = torch.arange(per_image.shape[0], device=per_image.device) // group_size
    return per_image.new_zeros((num_groups, *per_image.shape[1:])).index_add_(0, group_index, per_image)


def dice_class_indices(present: torch.Tensor) -> torch.Tensor:
    """The classes whose Dice terms are computed, per image: (B, K) bool presence -> (B, m) class indices, with every
    present class among them (the others are masked out by the caller).

    Eager on the CPU, only the classes present (m = the largest count over the images; host reads of CPU tensors
    synchronise nothing), which saves the sigmoids of absent classes at label resolution; elsewhere, and under
    compilation (no data-dependent shape), all K classes."""
    if present.device.type == "cpu" and not torch.compiler.is_compiling():
        num_dice = max(1, int(present.sum(1).max()))
        return torch.argsort(present.to(torch.uint8), dim=1, descending=True, stable=True)[:, :num_dice]
    return torch.arange(present.shape[1], device=present.device).expand(present.shape[0], -1)


# --- cross-entropy and Dice sums at label resolution, in bounded memory -----------------------------------------------


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
    """Per-image cross-entropy sum and sigmoid sums of logits upsampled to the labels' size: the result of
    `upsampled_segmentation_statistics_reference`, in bounded memory. The reference holds the (B, K, H, W) upsampled
    logits and their softmax and sigmoid (about 4 GB for a batch of 4 x 150 classes at 512 x 512); this streams rows
    of them through a custom autograd function with its own backward. Under compilation, the reference (the
    compiler fuses it; the row loop cannot be traced).

    Args:
        logits: (B, K, h, w) logits at feature resolution.
        labels: (B, H, W) class indices at full resolution, `ignore_index` where ignored.
        ignore_index: the ignored label value.
        dice_classes: optional (B, m) class indices per image whose sigmoid sums are wanted (the Dice terms).

    Returns:
        `tuple[torch.Tensor, torch.Tensor, torch.Tensor]`: nll (B,); probability_sum (B, m), the sum over all pixels
        of sigmoid(z) for `dice_classes`; target_probability_sum (B, K), the sum of sigmoid(z_k) over the pixels
        labelled k (zeros without `dice_classes`).
    """
    if torch.compiler.is_compiling():
        return upsampled_segmentation_statistics_reference(logits, labels, ignore_index, dice_classes)
    return _UpsampledSegmentationStatistics.apply(logits, labels, ignore_index, dice_classes)


def upsampled_segmentation_statistics_reference(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, dice_classes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`F.interpolate(logits, labels.shape[-2:], mode="bilinear", align_corners=True)`, then per image the
    cross-entropy sum over valid pixels (B,), the sums of sigmoid(z_k) over all pixels for `dice_classes` (B, m), and
    the sums of sigmoid(z_k) over the pixels labelled k (B, K; zeros without `dice_classes`)."""
    batch, num_classes = logits.shape[:2]
    upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0)[:, None]  # (B, 1, H, W)
    nll = -(upsampled.log_softmax(dim=1).gather(1, target)[:, 0] * valid).flatten(1).sum(1)
    if dice_classes is None:
        return nll, logits.new_zeros(batch, 0), logits.new_zeros(batch, num_classes)
    probs = torch.sigmoid(upsampled)
    probability_sum = probs.flatten(2).sum(-1).gather(1, dice_classes)
    target_probs = (probs.gather(1, target)[:, 0] * valid).flatten(1)[:, None]  # (B, 1, H W)
    target_probability_sum = per_class_sums(target_probs, labels, num_classes, ignore_index)[..., 0]
    return nll, probability_sum, target_probability_sum



# --- cosine similarities and class means ----------------------------------------------------------------------------


def cosine_logits(pixel_embeddings: torch.Tensor, prototypes: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * <n(U[:, :, n]), n(V[:, k])> with n(v) = v / (|v| + eps): U (B, C, N), V (B, K, C) -> (B, K, N).

    The scale is folded into the (small) prototypes and the pixel norms divide the product in place, so that the only
    (B, K, N) tensor is the product itself (no normalised copy of U)."""
    scaled_prototypes = scale * prototypes / (prototypes.norm(dim=-1, keepdim=True) + EPS)
    product = torch.bmm(scaled_prototypes, pixel_embeddings)
    return product.div_(pixel_embeddings.norm(dim=1, keepdim=True) + EPS)


def class_logits(pixel_features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1x1 classifier on flattened pixels: (B, C, N), W (K, C), b (K,) -> (B, K, N), as one matrix product."""
    return torch.matmul(weight, pixel_features) + bias[:, None]


def class_softmax_means(coarse: torch.Tensor, pixel_features: torch.Tensor) -> torch.Tensor:
    """Probability-weighted class means of pixel features under a softmax over classes:
    (B, K, N) logits, (B, C, N) features -> (B, K, C) = sum_n A[k, n] F[:, n] / (sum_n A[k, n] + eps)."""
    class_probs = coarse.softmax(dim=1)
    return torch.bmm(class_probs, pixel_features.transpose(1, 2)) / (class_probs.sum(dim=-1, keepdim=True) + EPS)


# --- the SegFormer decoder's fused feature ----------------------------------------------------------------------------


def sum_upsampled(stages: list, mode: str) -> torch.Tensor:
    """sum_i up(W_i x_i + b_i) at the first stage's resolution (bilinear, align_corners=False).

    stages: (x_i (B, C_i, h_i, w_i), W_i (C, C_i), b_i (C,) or None). mode "linear" applies W_i as a Linear over the
    channels-last view (x_i from the encoder), "conv" as a 1x1 convolution (x_i from a conv).
    """
    target_size = stages[0][0].shape[2:]
    total = 0
    for hidden_state, weight, bias in stages:
        if mode == "linear":
            mapped = F.linear(hidden_state.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
        else:
            mapped = F.conv2d(hidden_state, weight[:, :, None, None], bias)
        total = total + F.interpolate(mapped, size=target_size, mode="bilinear", align_corners=False)
    return total


def fused_feature(stages: list, mode: str, norm: torch.nn.BatchNorm2d, activation) -> torch.Tensor:
    """act(norm(sum_i up(W_i x_i + b_i))): the decoder feature F, (B, C, h_1, w_1).

    In an ONNX graph at inference: maps channels-last with batch norm folded into the weights and one bias.
    onnxruntime resizes channels-last maps faster than channels-first ones (its transpose optimiser removes the
    permutes around each Resize), and a projection as a MatMul over channels-last pixels avoids NCHWc reorders. On the
    whole SSA-B0 forward pass in onnxruntime (512x512, 2 threads) the eager layout took 1.09-1.13x as long
    (benchmarks/bench_ops.py --onnx, four runs): at the 10% threshold, kept; the exported graph then also has no
    BatchNormalization node.
    """
    if torch.onnx.is_in_onnx_export() and not norm.training:
        return _fused_feature_channels_last(stages, norm, activation)
    return activation(norm(sum_upsampled(stages, mode)))


def _fused_feature_channels_last(stages: list, norm: torch.nn.BatchNorm2d, activation) -> torch.Tensor:
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


# --- pooling for graphs with a dynamic size -----------------------------------------------------------------------------


def adaptive_avg_pool(x: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, output_size)`; in an ONNX graph from cumulative sums and bin bounds computed from
    the input's size, so that the graph keeps a dynamic height and width (the exporter fixes adaptive pooling's bins
    to the example size). Bin i along a side of length L covers [floor(i L / s), ceil((i + 1) L / s))."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, output_size)
    return adaptive_avg_pool_any_size(x, output_size)


def adaptive_avg_pool_any_size(x: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
    sizes = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    for dim, size in zip((2, 3), sizes):
        index = torch.arange(size, device=x.device)
        length = x.shape[dim]
        start = index * length // size
        end = ((index + 1) * length + size - 1) // size
        # Sums of rows [0, r) for r = 0..L: the cumulative sum with a zero row in front.
        sums = F.pad(x.cumsum(dim), (0, 0, 1, 0) if dim == 2 else (1, 0))
        counts = (end - start).to(x.dtype).view((1, 1, -1, 1) if dim == 2 else (1, 1, 1, -1))
        x = (sums.index_select(dim, end) - sums.index_select(dim, start)) / counts
    return x


class DropPath(torch.nn.Module):
    """Stochastic depth of the encoders that transformers lacks: in training, the whole residual branch of an image is
    dropped with probability `drop_prob` and kept ones are scaled by 1 / (1 - drop_prob)."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1 - self.drop_prob
        mask = (keep + torch.rand((hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1),
                                  dtype=hidden_states.dtype, device=hidden_states.device)).floor_()
        return hidden_states.div(keep) * mask


__all__ = [
    "EPS", "DropPath", "adaptive_avg_pool", "adaptive_avg_pool_any_size", "at_least_float32", "class_logits",
    "class_softmax_means", "cosine_logits", "dice_class_indices", "downsample_labels", "float32_region", "fused_feature", "group_sum",
    "per_class_sums", "sum_upsampled", "upsampled_segmentation_statistics",
    "upsampled_segmentation_statistics_reference",
]
