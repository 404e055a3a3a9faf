"""Does a tuned kernel earn its place? Whole forward passes of SSA-B0 (150 classes) with the plain op against the
same model with one tuned candidate swapped in, timed as interleaved pairs in one process after warm-up; the table
gives the median of the per-pair time ratios (tuned / plain) and their spread. A candidate stays in
`ssa_hf/ops_ssa.py` only at a median gain of at least 10% on the whole forward pass.

Candidates (the CPU inference tricks of earlier versions):
- shift-add P_f: the depth-wise 3x3 position encoding as nine shifted multiply-adds instead of one convolution;
- grouped-conv cosine: the (B, K, N) similarity product as a grouped 1x1 convolution instead of a batched matmul;
- in-place decoder sum: the SegFormer decoder's upsampled projections summed in place, contiguous before resizing;
- blocked pixel norms: the norms of the pixel embeddings accumulated over blocks of 32 channels.

With --onnx, the same question for layouts inside an ONNX export, timed in onnxruntime (graphs exported with and
without the candidate):
- channels-last decoder (kept, see `ops_ssa.fused_feature`): the SegFormer decoder channels-last, batch norm folded
  into the projections;
- pixels-last class means: SEPA's softmax over classes and its sums along contiguous axes;
- matmul pixel norms: the norms of the pixel embeddings as a ones-row matrix product.

    python benchmarks/bench_ops.py [--size 512] [--pairs 8] [--threads N] [--onnx]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_results  # noqa: E402

import ssa_hf.model.classifier_ssa as classifier_module  # noqa: E402
import ssa_hf.model.decoders_ssa as decoders_module  # noqa: E402
import ssa_hf.ops_ssa as ops  # noqa: E402
from ssa_hf import SSAConfig, SSAForSemanticSegmentation  # noqa: E402


def shift_add_position_encoding(conv):
    def forward(features):
        weight, bias = conv.weight, conv.bias.view(1, -1, 1, 1)
        position = torch.addcmul(bias, features, weight[:, 0, 1, 1].view(1, -1, 1, 1))
        height, width = features.shape[-2:]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == dx == 0:
                    continue
                rows_out, cols_out = slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx))
                rows_in, cols_in = slice(max(0, dy), height - max(0, -dy)), slice(max(0, dx), width - max(0, -dx))
                tap = weight[:, 0, dy + 1, dx + 1].view(1, -1, 1, 1)
                position[:, :, rows_out, cols_out].addcmul_(features[:, :, rows_in, cols_in], tap)
        return position

    return forward


def grouped_conv_cosine(pixel_embeddings, prototypes, scale):
    scaled = scale * prototypes / (prototypes.norm(dim=-1, keepdim=True) + ops.EPS)
    batch, channels, num_pixels = pixel_embeddings.shape
    product = F.conv2d(pixel_embeddings.reshape(1, batch * channels, num_pixels, 1),
                       scaled.reshape(-1, channels, 1, 1), groups=batch).view(batch, -1, num_pixels)
    return product.div_(pixel_embeddings.norm(dim=1, keepdim=True) + ops.EPS)


def cosine_with(norms):
    def cosine(pixel_embeddings, prototypes, scale):
        scaled = scale * prototypes / (prototypes.norm(dim=-1, keepdim=True) + ops.EPS)
        return torch.bmm(scaled, pixel_embeddings).div_(norms(pixel_embeddings) + ops.EPS)

    return cosine


def blocked_pixel_norms(x, block_channels: int = 32):
    squares = x.new_zeros(x.shape[0], 1, x.shape[2])
    for block in x.split(block_channels, dim=1):
        squares = squares + (block * block).sum(dim=1, keepdim=True)
    return squares.sqrt()


def matmul_pixel_norms(x):
    return torch.matmul(x.new_ones(1, x.shape[1]), x * x).sqrt()


def pixels_last_class_means(coarse, pixel_features):
    class_probs = coarse.transpose(1, 2).softmax(dim=-1)  # (B, N, K)
    return torch.bmm(class_probs.transpose(1, 2), pixel_features.transpose(1, 2)) / (
        class_probs.sum(dim=1).unsqueeze(-1) + ops.EPS)


def in_place_fused_feature(stages, mode, norm, activation):
    target_size = stages[0][0].shape[2:]
    total = None
    for hidden_state, weight, bias in stages:
        batch, _, height, width = hidden_state.shape
        mapped = F.linear(hidden_state.flatten(2).transpose(1, 2), weight, bias).transpose(1, 2).reshape(
            batch, -1, height, width) if mode == "linear" else F.conv2d(hidden_state, weight[:, :, None, None], bias)
        if mapped.shape[2:] != target_size:
            mapped = F.interpolate(mapped.contiguous(), size=target_size, mode="bilinear", align_corners=False)
        total = mapped.contiguous() if total is None else total.add_(mapped)
    return activation(norm(total))


def candidates(model):
    """name -> (enable, disable) of each eager candidate on `model`."""
    classifier = model.decode_head.classifier
    plain_conv_forward = classifier.position_encoder.forward
    return {
        "shift-add P_f": (lambda: setattr(classifier.position_encoder, "forward",
                                          shift_add_position_encoding(classifier.position_encoder)),
                          lambda: setattr(classifier.position_encoder, "forward", plain_conv_forward)),
        "grouped-conv cosine": (lambda: setattr(classifier_module, "cosine_logits", grouped_conv_cosine),
                                lambda: setattr(classifier_module, "cosine_logits", ops.cosine_logits)),
        "in-place decoder sum": (lambda: setattr(decoders_module, "fused_feature", in_place_fused_feature),
                                 lambda: setattr(decoders_module, "fused_feature", ops.fused_feature)),
        "blocked pixel norms": (lambda: setattr(classifier_module, "cosine_logits", cosine_with(blocked_pixel_norms)),
                                lambda: setattr(classifier_module, "cosine_logits", ops.cosine_logits)),
    }


def eager_decoder(stages, mode, norm, activation):
    return activation(norm(ops.sum_upsampled(stages, mode)))


def eager_class_means(coarse, pixel_features):
    class_probs = coarse.softmax(dim=1)
    return torch.bmm(class_probs, pixel_features.transpose(1, 2)) / (class_probs.sum(dim=-1, keepdim=True) + ops.EPS)


def eager_fused_feature(stages, mode, norm, activation):
    return activation(norm(ops.sum_upsampled(stages, mode)))


ONNX_CANDIDATES = {  # name -> (module, attribute, plain, tuned)
    "channels-last decoder": (decoders_module, "fused_feature", eager_fused_feature, ops.fused_feature),
    "pixels-last class means": (classifier_module, "class_softmax_means", ops.class_softmax_means, pixels_last_class_means),
    "matmul pixel norms": (classifier_module, "cosine_logits", ops.cosine_logits, cosine_with(matmul_pixel_norms)),
}


def onnx_rows(model, size: int, pairs: int, threads: int) -> list[dict]:
    import tempfile

    from ssa_hf.onnx_export import export_onnx, onnx_session

    feed = {"pixel_values": torch.randn(1, 3, size, size).numpy()}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, (module, attribute, plain, tuned) in ONNX_CANDIDATES.items():
            sessions = {}
            for kind, function in (("plain", plain), ("tuned", tuned)):
                original = getattr(module, attribute)
                setattr(module, attribute, function)
                try:
                    export_onnx(model, Path(folder) / f"{kind}.onnx", example_size=(size, size))
                finally:
                    setattr(module, attribute, original)
                sessions[kind] = onnx_session(Path(folder) / f"{kind}.onnx", threads=threads)
            outputs = {kind: session.run(["logits"], feed)[0] for kind, session in sessions.items()}
            ratios = []
            for _ in range(pairs):
                started = time.perf_counter()
                sessions["plain"].run(["logits"], feed)
                middle = time.perf_counter()
                sessions["tuned"].run(["logits"], feed)
                ratios.append((time.perf_counter() - middle) / (middle - started))
            rows.append({"candidate": name, "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
                         "max_ratio": max(ratios),
                         "max_logit_difference": float(abs(outputs["tuned"] - outputs["plain"]).max())})
    return rows


def table(header: str, rows: list[dict]) -> str:
    lines = [header, "", "| candidate | median ratio | spread (min - max) | max logit difference | gains 10% |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['candidate']} | {row['median_ratio']:.3f} | {row['min_ratio']:.3f} - "
                     f"{row['max_ratio']:.3f} | {row['max_logit_difference']:.1e} | "
                     f"{'yes' if row['median_ratio'] <= 0.9 else 'no'} |")
    return "\n".join(lines)


def timed(model, pixel_values) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        model(pixel_values=pixel_values)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--onnx", action="store_true", help="the ONNX layouts, timed in onnxruntime")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SSAForSemanticSegmentation(SSAConfig.from_segformer_config("b0", num_labels=150)).eval()
    pixel_values = torch.randn(1, 3, args.size, args.size)
    if args.onnx:
        rows = onnx_rows(model, args.size, args.pairs, args.threads)
        header = (f"SSA-B0 in onnxruntime ({args.size}x{args.size}, 150 classes, CPU, {args.threads} threads), "
                  f"{args.pairs} interleaved pairs: time of the graph with the candidate / time without it")
        write_results("bench_ops_onnx", table(header, rows), {"args": vars(args), "rows": rows})
        return
    for _ in range(3):
        timed(model, pixel_values)
    rows = []
    for name, (enable, disable) in candidates(model).items():
        with torch.no_grad():
            plain = model(pixel_values=pixel_values).logits
            enable()
            tuned = model(pixel_values=pixel_values).logits
            disable()
        difference = (plain - tuned).abs().max().item()
        ratios = []
        for _ in range(args.pairs):
            base = timed(model, pixel_values)
            enable()
            candidate = timed(model, pixel_values)
            disable()
            ratios.append(candidate / base)
        rows.append({"candidate": name, "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
                     "max_ratio": max(ratios), "max_logit_difference": difference})
    header = (f"Whole SSA-B0 forward pass ({args.size}x{args.size}, 150 classes, CPU, {args.threads} threads), "
              f"{args.pairs} interleaved pairs: time with the candidate / time with the plain op")
    write_results("bench_ops", table(header, rows), {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
