"""The paper's lightweight models on the CPU: SSA's own inference cost on SeaFormer, SegNeXt, CGRSeg and AFFormer
(against the same model with its plain 1x1 classifier; for CGRSeg, the published model with its second stage, which
SSA replaces), a latency and parameter table beside MiT-B0 and transformers' SegFormer-B0, a training step (time and
peak memory) of SeaFormer-L with and without SSA, and ONNX Runtime against PyTorch.

Time ratios come from interleaved runs in one process after warm-up (the sides run back to back, so slow drift of a
shared machine cancels in each pair's ratio): the median of the per-pair ratios and their spread. Peak memory is
measured in a fresh subprocess per side (the first training step's peak RSS growth). Batch 1 (training: 2), 512x512,
150 classes, float32. Writes benchmarks/results/bench_lightweight.md (and .json).

    python benchmarks/bench_lightweight.py            # about 30 minutes on 2 cores
    python benchmarks/bench_lightweight.py --quick    # fewer repeats, no ONNX
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import write_results

SIZE = 512
# The paper's ADE20K single-scale mIoU (Table 1): the baseline, then with SSA.
PAPER = {"SeaFormer-B": (40.05, 42.46), "SeaFormer-L": (42.36, 45.36), "SegNeXt-T": (41.04, 43.90),
         "AFFormer-B": (39.94, 41.92), "CGRSeg-B": (45.5, 47.1), "CGRSeg-L": (48.3, 49.0)}


def build(name: str, classifier_type: str = "ssa"):
    """A model of the table, random weights, 150 classes."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from ssa_hf import MIT_VARIANTS, SSAConfig, SSAForSemanticSegmentation

    torch.manual_seed(0)
    if name == "SegFormer-B0":  # transformers' own
        return SegformerForSemanticSegmentation(SegformerConfig(**MIT_VARIANTS["b0"], num_labels=150))
    config = {"SeaFormer-B": lambda: SSAConfig.from_seaformer_config("base", num_labels=150),
              "SeaFormer-L": lambda: SSAConfig.from_seaformer_config("large", num_labels=150),
              "SegNeXt-T": lambda: SSAConfig.from_mscan_config("tiny", num_labels=150),
              "CGRSeg-B": lambda: SSAConfig.from_efficientformer_v2_config("s2", num_labels=150),
              "CGRSeg-L": lambda: SSAConfig.from_efficientformer_v2_config("l", num_labels=150),
              "AFFormer-B": lambda: SSAConfig.from_afformer_config("base", num_labels=150),
              "MiT-B0": lambda: SSAConfig.from_segformer_config("b0", num_labels=150)}[name]()
    config.classifier_type = classifier_type
    return SSAForSemanticSegmentation(config)


def parameters(model) -> tuple[int, int]:
    """(all parameters, those of inference: without the training-only teacher layers)."""
    total = sum(p.numel() for p in model.parameters())
    teacher = sum(p.numel() for n, p in model.named_parameters() if ".teacher_" in n)
    return total, total - teacher


def interleaved(runs: dict, repeats: int, warmup: int = 2) -> dict:
    """Each round runs every callable once, in order; per-round times, medians."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_summary(candidate: list[float], baseline: list[float]) -> dict:
    ratios = [c / b for c, b in zip(candidate, baseline)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def inference_runs(models: dict, pixel_values):
    import torch

    def runner(model):
        def run():
            with torch.inference_mode():
                model(pixel_values=pixel_values)
        return run

    return {name: runner(model.eval()) for name, model in models.items()}


def section_overhead(repeats: int) -> dict:
    """SSA against the plain classifier on the same encoder and decoder (CGRSeg: the published two-stage head)."""
    import torch

    pixel_values = torch.randn(1, 3, SIZE, SIZE)
    results = {}
    for name in ("SeaFormer-L", "SeaFormer-B", "SegNeXt-T", "CGRSeg-L", "CGRSeg-B", "AFFormer-B"):
        models = {"plain": build(name, "plain"), "ssa": build(name)}
        times = interleaved(inference_runs(models, pixel_values), repeats)
        results[name] = {"plain_ms": 1000 * statistics.median(times["plain"]),
                         "ssa_ms": 1000 * statistics.median(times["ssa"]),
                         "ratio": ratio_summary(times["ssa"], times["plain"])}
    return results


def section_table(repeats: int) -> dict:
    import torch

    names = ["SegFormer-B0", "MiT-B0", "AFFormer-B", "SegNeXt-T", "SeaFormer-B", "SeaFormer-L", "CGRSeg-B", "CGRSeg-L"]
    models = {name: build(name) for name in names}
    pixel_values = torch.randn(1, 3, SIZE, SIZE)
    times = interleaved(inference_runs(models, pixel_values), repeats)
    rows = {}
    for name, model in models.items():
        total, inference = parameters(model)
        rows[name] = {"ms": 1000 * statistics.median(times[name]), "params": total, "inference_params": inference,
                      "ratio_to_segformer_b0": ratio_summary(times[name], times["SegFormer-B0"])}
    return rows


def worker_train(name: str, classifier_type: str) -> dict:
    """One side's first training step in a fresh process: peak RSS growth and time."""
    import torch

    model = build(name, classifier_type).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixel_values, labels = torch.randn(2, 3, SIZE, SIZE), torch.randint(0, 150, (2, SIZE, SIZE))
    with open("/proc/self/statm") as handle:
        before = int(handle.read().split()[1]) * resource.getpagesize() / 2**20
    start = time.perf_counter()
    model(pixel_values=pixel_values, labels=labels).loss.backward()
    optimizer.step()
    return {"first_step_s": time.perf_counter() - start,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before}


def section_training(repeats: int) -> dict:
    import torch

    def stepper(classifier_type):
        model = build("SeaFormer-L", classifier_type).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        pixel_values, labels = torch.randn(2, 3, SIZE, SIZE), torch.randint(0, 150, (2, SIZE, SIZE))
        labels[:, :32] = 255

        def step():
            optimizer.zero_grad(set_to_none=True)
            model(pixel_values=pixel_values, labels=labels).loss.backward()
            optimizer.step()
        return step

    times = interleaved({"plain": stepper("plain"), "ssa": stepper("ssa")}, repeats, warmup=1)
    memory = {}
    for side in ("plain", "ssa"):
        done = subprocess.run([sys.executable, __file__, "--worker-train", side], capture_output=True, text=True,
                              check=True)
        memory[side] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"plain_s": statistics.median(times["plain"]), "ssa_s": statistics.median(times["ssa"]),
            "ratio": ratio_summary(times["ssa"], times["plain"]), "memory": memory}


def section_onnx(repeats: int) -> dict:
    import numpy as np
    import torch

    from ssa_hf.onnx_export import export_onnx, onnx_session

    results = {}
    pixel_values = torch.randn(1, 3, SIZE, SIZE)
    for name in ("SeaFormer-L", "SegNeXt-T", "CGRSeg-L", "AFFormer-B"):
        model = build(name).eval()
        with tempfile.TemporaryDirectory() as folder:
            exported = export_onnx(model, Path(folder) / "model.onnx", example_size=(SIZE, SIZE))
            session = onnx_session(Path(folder) / "model.onnx", quiet=True)
            inputs = {"pixel_values": pixel_values.numpy()}
            runs = inference_runs({"pytorch": model}, pixel_values) | {
                "onnxruntime": lambda session=session, inputs=inputs: session.run(["logits"], inputs)}
            times = interleaved(runs, repeats)
            with torch.inference_mode():
                expected = model(pixel_values=pixel_values).logits.numpy()
            difference = float(np.abs(session.run(["logits"], inputs)[0] - expected).max())
        results[name] = {"pytorch_ms": 1000 * statistics.median(times["pytorch"]),
                         "onnxruntime_ms": 1000 * statistics.median(times["onnxruntime"]),
                         "ratio": ratio_summary(times["onnxruntime"], times["pytorch"]),
                         "max_abs_difference": difference, "checks": exported["checks"]}
    return results


def spread(summary: dict) -> str:
    return f"{summary['median']:.2f} ({summary['min']:.2f}-{summary['max']:.2f})"


def table(results: dict, command: str) -> str:
    lines = [f"# The lightweight models on this CPU ({results['threads']} threads, {SIZE}x{SIZE}, batch 1)", "",
             "## SSA's own inference cost (targets: <= 1.10 on SeaFormer-L, <= 1.00 on CGRSeg-L)", "",
             "The plain side is the model as published: the 1x1 classifier, and for CGRSeg also its second stage "
             "(class contexts, prototype guidance, a second pass of the classifier), which SSA replaces.", "",
             "| model | published (ms) | SSA (ms) | SSA / published: median (min-max) |", "|---|---|---|---|"]
    for name, row in results["overhead"].items():
        lines.append(f"| {name} | {row['plain_ms']:.0f} | {row['ssa_ms']:.0f} | {spread(row['ratio'])} |")
    lines += ["", "## Latency and parameters", "",
              "| model | ms | / SegFormer-B0 | parameters | at inference | paper ADE20K mIoU (baseline -> SSA) |",
              "|---|---|---|---|---|---|"]
    for name, row in results["table"].items():
        model = name if name == "SegFormer-B0" else f"SSA-{name}"
        paper = " -> ".join(f"{v:.2f}" for v in PAPER[name]) if name in PAPER else "-"
        lines.append(f"| {model} | {row['ms']:.0f} | {spread(row['ratio_to_segformer_b0'])} | "
                     f"{row['params'] / 1e6:.2f} M | {row['inference_params'] / 1e6:.2f} M | {paper} |")
    training = results["training"]
    lines += ["", "## Training step, SeaFormer-L (batch 2, AdamW)", "",
              "| | plain | SSA | SSA / plain |", "|---|---|---|---|",
              f"| step time (s) | {training['plain_s']:.2f} | {training['ssa_s']:.2f} | {spread(training['ratio'])} |",
              f"| peak memory of the first step (MB) | {training['memory']['plain']['peak_mb']:.0f} | "
              f"{training['memory']['ssa']['peak_mb']:.0f} | "
              f"{training['memory']['ssa']['peak_mb'] / training['memory']['plain']['peak_mb']:.2f} |"]
    if results.get("onnx"):
        lines += ["", "## ONNX Runtime against PyTorch (SSA models)", "",
                  "| model | PyTorch (ms) | onnxruntime (ms) | ort / PyTorch | max abs logit difference |",
                  "|---|---|---|---|---|"]
        for name, row in results["onnx"].items():
            lines.append(f"| SSA-{name} | {row['pytorch_ms']:.0f} | {row['onnxruntime_ms']:.0f} | "
                         f"{spread(row['ratio'])} | {row['max_abs_difference']:.1e} |")
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and no ONNX section")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker-train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.worker_train:
        print(json.dumps(worker_train("SeaFormer-L", args.worker_train)))
        return
    repeats = 4 if args.quick else 12
    results = {"threads": args.threads, "overhead": section_overhead(repeats), "table": section_table(repeats),
               "training": section_training(max(2, repeats // 3))}
    if not args.quick:
        results["onnx"] = section_onnx(repeats)
    command = "python benchmarks/bench_lightweight.py" + (" --quick" if args.quick else "")
    write_results("bench_lightweight", table(results, command), results)


if __name__ == "__main__":
    main()
