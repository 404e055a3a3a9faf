"""SSA's own inference cost on the decoders added for the paper's OCRNet row and for transformers' semantic
segmenters (`from_transformers`): OCRNet-HRNet-W48, BEiT-B (UperNet head), DPT-L, MobileViT-S and MobileViTV2-1.0
(DeepLabV3) and MobileNetV2-1.0 (DeepLabV3+), each at the size of its published ADE20K / VOC checkpoint (random
weights, 150 classes), batch 1, 512x512, float32, on the CPU.

For each model the encoder runs once per repeat and its feature maps feed both heads: the decoder with its plain 1x1
classifier (the source model as published) and the same decoder with SSA. The two heads run back to back, interleaved
after warm-up, so drift of a shared machine cancels in each pair's ratio. Reported: median encoder time, both heads'
median times, SSA's head over the plain head, and the whole model's ratio (encoder + head) with the spread of the
per-pair ratios. Writes benchmarks/results/bench_transformers_heads.md (and .json).

    python benchmarks/bench_transformers_heads.py           # about 10 minutes on 2 cores
    python benchmarks/bench_transformers_heads.py --quick   # fewer repeats
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_io import write_results  # noqa: E402

SIZE = 512


def sources() -> dict:
    """Each published checkpoint's architecture at 512 pixels (output strides as transformers' conversion scripts set
    them: 16 for the MobileViT DeepLabV3s, 8 for MobileNetV2's; the hub itself is not reachable here)."""
    from transformers import (
        BeitConfig,
        BeitForSemanticSegmentation,
        DPTConfig,
        DPTForSemanticSegmentation,
        MobileNetV2Config,
        MobileNetV2ForSemanticSegmentation,
        MobileViTConfig,
        MobileViTForSemanticSegmentation,
        MobileViTV2Config,
        MobileViTV2ForSemanticSegmentation,
    )

    return {  # name -> (build, the checkpoint whose architecture it is)
        "BEiT-B UperNet": (lambda: BeitForSemanticSegmentation(BeitConfig(
            image_size=SIZE, use_relative_position_bias=True, use_mean_pooling=False, out_indices=[3, 5, 7, 11],
            use_auxiliary_head=True, num_labels=150)), "microsoft/beit-base-finetuned-ade-640-640"),
        "DPT-L": (lambda: DPTForSemanticSegmentation(DPTConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, image_size=384,
            backbone_out_indices=[5, 11, 17, 23], neck_hidden_sizes=[256, 512, 1024, 1024], use_auxiliary_head=True,
            num_labels=150)), "Intel/dpt-large-ade"),
        "MobileViT-S DeepLabV3": (lambda: MobileViTForSemanticSegmentation(MobileViTConfig(
            image_size=SIZE, output_stride=16, num_labels=150)), "apple/deeplabv3-mobilevit-small"),
        "MobileViTV2-1.0 DeepLabV3": (lambda: MobileViTV2ForSemanticSegmentation(MobileViTV2Config(
            image_size=SIZE, output_stride=16, num_labels=150)), "apple/mobilevitv2-1.0-voc-deeplabv3"),
        "MobileNetV2-1.0 DeepLabV3+": (lambda: MobileNetV2ForSemanticSegmentation(MobileNetV2Config(
            image_size=SIZE, output_stride=8, num_labels=150)), "google/deeplabv3_mobilenet_v2_1.0_513"),
    }


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def ocrnet_pair():
    """OCRNet-HRNet-W48 (this package's HRNet and OCR head), with SSA and with its plain classifier."""
    from ssa_hf import SSAConfig, SSAForSemanticSegmentation

    model = SSAForSemanticSegmentation(SSAConfig.from_hrnet_config("w48", num_labels=150))
    plain = SSAForSemanticSegmentation(SSAConfig.from_hrnet_config("w48", num_labels=150, classifier_type="plain"))
    plain.load_state_dict(model.state_dict(), strict=False)
    return model, plain


def transformers_pair(build):
    """A transformers segmenter through `from_transformers`, with SSA and with its own classifier."""
    from ssa_hf import SSAForSemanticSegmentation

    source = build().eval()
    return (SSAForSemanticSegmentation.from_transformers(source),
            SSAForSemanticSegmentation.from_transformers(source, classifier_type="plain"))


@torch.no_grad()
def measure(pair, repeats: int) -> dict:
    torch.manual_seed(0)
    model, plain = (side.eval() for side in pair())
    pixel_values = torch.randn(1, 3, SIZE, SIZE)
    encoder_times, plain_times, ssa_times, ratios = [], [], [], []
    for repeat in range(repeats + 1):  # the first is warm-up
        start = time.perf_counter()
        feature_maps = model.encoder.forward_with_filtered_kwargs(pixel_values).feature_maps
        encoder = time.perf_counter() - start
        start = time.perf_counter()
        plain.decode_head.plain_logits(feature_maps)
        head_plain = time.perf_counter() - start
        start = time.perf_counter()
        model.decode_head.classifier(model.decode_head.fuse(feature_maps))
        head_ssa = time.perf_counter() - start
        if repeat:
            encoder_times.append(encoder)
            plain_times.append(head_plain)
            ssa_times.append(head_ssa)
            ratios.append((encoder + head_ssa) / (encoder + head_plain))
    size = model.decode_head.fuse(feature_maps).shape
    parameters = sum(p.numel() for n, p in model.named_parameters() if ".teacher_" not in n)
    return {"encoder_ms": median_ms(encoder_times), "plain_head_ms": median_ms(plain_times),
            "ssa_head_ms": median_ms(ssa_times), "head_ratio": statistics.median(ssa_times) / statistics.median(
                plain_times), "model_ratio": statistics.median(ratios), "model_ratio_min": min(ratios),
            "model_ratio_max": max(ratios), "feature": list(size[1:]),
            "plain_parameters_m": sum(p.numel() for p in plain.parameters()) / 1e6, "ssa_parameters_m": parameters / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 10")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    models = {"OCRNet-HRNet-W48": (ocrnet_pair, "configs/ocrnet/ocrnet_hr48_512x512_160k_ade20k_ssa.py")} | {
        name: (lambda build=build: transformers_pair(build), checkpoint)
        for name, (build, checkpoint) in sources().items()}
    for name, (pair, checkpoint) in models.items():
        results[name] = measure(pair, 3 if args.quick else 10) | {"checkpoint": checkpoint}
        print(name, results[name], flush=True)
    lines = ["| model (architecture of) | F (C x h x w) | encoder ms | plain head ms | SSA head ms | SSA / plain head | "
             "SSA / plain model (range) | parameters plain -> SSA (M) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} (`{r['checkpoint']}`) | {' x '.join(map(str, r['feature']))} | {r['encoder_ms']:.0f} | "
                     f"{r['plain_head_ms']:.1f} | {r['ssa_head_ms']:.1f} | {r['head_ratio']:.2f} | "
                     f"{r['model_ratio']:.3f} ({r['model_ratio_min']:.3f}-{r['model_ratio_max']:.3f}) | "
                     f"{r['plain_parameters_m']:.2f} -> {r['ssa_parameters_m']:.2f} |")
    lines += ["", f"Batch 1, {SIZE}x{SIZE}, 150 classes, float32, {torch.get_num_threads()} threads; medians of "
                  f"{3 if args.quick else 10} interleaved repeats after one warm-up. SSA parameters without the "
                  f"training-only teacher.",
              f"Command: python benchmarks/bench_transformers_heads.py{' --quick' if args.quick else ''}"]
    write_results("bench_transformers_heads", "\n".join(lines), results)


if __name__ == "__main__":
    main()
