"""CPU latency at 512x512, batch 1: PyTorch eager, torch.compile and onnxruntime, for SSA-B0 and transformers'
SegFormer-B0 (random weights, 150 classes). Prints a table and writes benchmarks/results/bench_onnx.md (and .json).

    python benchmarks/bench_onnx.py              # about 4 minutes on 2 cores
    python benchmarks/bench_onnx.py --repeats 5  # quicker

Each runtime of a model is timed in turns (eager, compiled, onnxruntime, repeated), so slow drift of a shared machine
affects all three alike; the ratio is the median of per-round ratios.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssa_hf import SSAConfig, SSAForSemanticSegmentation  # noqa: E402
from ssa_hf.onnx_export import export_onnx, onnx_session  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def build(kind: str):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from ssa_hf import MIT_VARIANTS

    torch.manual_seed(0)
    if kind == "SegFormer-B0 (transformers)":
        return SegformerForSemanticSegmentation(SegformerConfig(**MIT_VARIANTS["b0"], num_labels=150)).eval()
    return SSAForSemanticSegmentation(SSAConfig.from_segformer_config("b0", num_labels=150)).eval()


def measure(kind: str, repeats: int, threads: int, folder: Path) -> dict:
    model = build(kind)
    pixel_values = torch.randn(1, 3, 512, 512)
    path = folder / f"{kind.split()[0]}.onnx"
    export = export_onnx(model, path, example_size=(512, 512))
    session = onnx_session(path, threads=threads)
    compiled = torch.compile(model)
    feed = {"pixel_values": pixel_values.numpy()}

    with torch.inference_mode():
        expected = model(pixel_values=pixel_values).logits
        compile_start = time.perf_counter()
        compiled_logits = compiled(pixel_values=pixel_values).logits  # compiles
        compile_s = time.perf_counter() - compile_start
        runtimes = {
            "eager": lambda: model(pixel_values=pixel_values),
            "torch.compile": lambda: compiled(pixel_values=pixel_values),
            "onnxruntime": lambda: session.run(["logits"], feed),
        }
        times = {name: [] for name in runtimes}
        for round_index in range(repeats + 2):  # 2 warm-up rounds
            for name, run in runtimes.items():
                start = time.perf_counter()
                run()
                if round_index >= 2:
                    times[name].append(time.perf_counter() - start)
    (onnx_logits,) = session.run(["logits"], feed)
    return {
        "median_ms": {name: 1e3 * statistics.median(values) for name, values in times.items()},
        "ort_speedup": statistics.median(e / o for e, o in zip(times["eager"], times["onnxruntime"])),
        "compile_speedup": statistics.median(e / c for e, c in zip(times["eager"], times["torch.compile"])),
        "compile_s": compile_s,
        "max_abs_diff_onnx": float(abs(onnx_logits - expected.numpy()).max()),
        "max_abs_diff_compile": float((compiled_logits - expected).abs().max()),
        "export_checks": export["checks"],
        "times": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("SSA-B0 (ssa_hf)", "SegFormer-B0 (transformers)"):
            print(f"measuring {kind} ...", flush=True)
            results[kind] = measure(kind, args.repeats, args.threads, Path(tmp))
    header = "| model | eager | torch.compile | onnxruntime | onnxruntime vs eager | compile vs eager | " \
             "ONNX max abs logit diff |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        ms = r["median_ms"]
        lines.append(f"| {kind} | {ms['eager']:.0f} ms | {ms['torch.compile']:.0f} ms | {ms['onnxruntime']:.0f} ms | "
                     f"{r['ort_speedup']:.2f}x | {r['compile_speedup']:.2f}x | {r['max_abs_diff_onnx']:.1e} |")
    footer = (f"\n512x512, batch 1, {args.threads} threads (torch and onnxruntime intra-op), CPU; torch "
              f"{torch.__version__}, onnxruntime {onnxruntime.__version__}; medians of {args.repeats} rounds, "
              f"speed-ups = median of per-round ratios. Target: onnxruntime >= 2x faster than eager. "
              f"Command: python benchmarks/bench_onnx.py" + (f" --repeats {args.repeats}" if args.repeats != 15 else ""))
    table = "\n".join(lines) + "\n" + footer
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_onnx.md").write_text(table + "\n")
    (RESULTS / "bench_onnx.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
