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

import torch
import torch.nn.functional as F

EPS = 1e-12


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


# --- labels and per-class sums (shared by the teacher and the losses) -------------------------------------------------


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Legacy nearest resize of labels to the feature size: Y[b, floor(i * H / h), floor(j * W / w)], as the original
    code's `F.interpolate(..., mode="nearest")`."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def per_class_sums(values: torch.Tensor, label_map: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Sums of per-pixel values over the pixels of each class: (B, D, N) values, (B, ...) labels -> (B, K, D).

    A scatter-add over the label index (N * D work, not the K * N * D of a one-hot product; summed in a fixed order
    on the CPU); ignored pixels go to a spare slot that is dropped.
    """
    batch, depth = values.shape[:2]
    labels = label_map.reshape(batch, 1, -1)
    slots = torch.where(labels == ignore_index, num_classes, labels).expand(-1, depth, -1)
    sums = values.new_zeros(batch, depth, num_classes + 1).scatter_add_(2, slots, values)
    return sums[..., :num_classes].transpose(1, 2)


def group_sum(per_image: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sum consecutive images in groups of `group_size` (the last group may be smaller): (B, ...) -> (G, ...)."""
    num_groups = -(-per_image.shape[0] // group_size)
    group_index = torch.arange(per_image.shape[0], device=per_image.device) // group_size
    return per_image.new_zeros((num_groups, *per_image.shape[1:])).index_add_(0, group_index, per_image)


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


def sum_upsampled_reference(stages: list, mode: str) -> torch.Tensor:
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
    whole SSA-B0 forward pass in onnxruntime (512x512, 2 threads) the eager layout took 1.09-1.11x as long
    (benchmarks/bench_ops.py --onnx, two runs): at the 10% threshold, kept because the exported graph then has no
    BatchNormalization node.
    """
    if torch.onnx.is_in_onnx_export() and not norm.training:
        return _fused_feature_channels_last(stages, norm, activation)
    return activation(norm(sum_upsampled_reference(stages, mode)))


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


def adaptive_avg_pool(x: torch.Tensor, output_size: int) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, output_size)`; in an ONNX graph from cumulative sums and bin bounds computed from
    the input's size, so that the graph keeps a dynamic height and width (the exporter fixes adaptive pooling's bins
    to the example size). Bin i along a side of length L covers [floor(i L / s), ceil((i + 1) L / s))."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, output_size)
    return adaptive_avg_pool_any_size(x, output_size)


def adaptive_avg_pool_any_size(x: torch.Tensor, output_size: int) -> torch.Tensor:
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


__all__ = [
    "EPS", "adaptive_avg_pool", "adaptive_avg_pool_any_size", "at_least_float32", "class_logits",
    "class_softmax_means", "cosine_logits", "downsample_labels", "float32_region", "fused_feature", "group_sum",
    "per_class_sums", "sum_upsampled_reference",
]
