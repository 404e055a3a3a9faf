"""CPU latency at 512x512, batch 1: PyTorch eager, torch.compile and onnxruntime, for SSA-B0 and transformers'
SegFormer-B0 (random weights, 150 classes). Prints a table and writes benchmarks/results/bench_onnx.md (and .json).

    python benchmarks/bench_onnx.py                        # about 6 minutes on 2 cores
    python benchmarks/bench_onnx.py --rounds 3 --block 3   # quicker

Timing: each runtime runs in blocks (one untimed call, then --block timed calls) and the blocks of the three runtimes
take turns for --rounds rounds, so slow drift of a shared machine affects all three alike. (Alternating single calls
instead slowed eager PyTorch by up to 2x here: each call then starts on memory the other runtime just used.)

Allocator: eager PyTorch hands its large freed buffers back to the OS (glibc's default), so every call page-faults
fresh memory, 16-20 thousand faults a call for SSA-B0, which cost 30-40 ms on this VM. onnxruntime keeps its own
arena. So everything is measured twice: with the default allocator (what a user gets), and in a child process with
glibc told to keep freed memory (MALLOC_MMAP_THRESHOLD_=32 MiB, MALLOC_TRIM_THRESHOLD_=never), eager's best case.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_io import write_results  # noqa: E402

from ssa_hf import SSAConfig, SSAForSemanticSegmentation  # noqa: E402
from ssa_hf.onnx_export import export_onnx, onnx_session  # noqa: E402

MODELS = ("SSA-B0 (ssa_hf)", "SegFormer-B0 (transformers)")
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**62)}


def build(kind: str):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from ssa_hf import MIT_VARIANTS

    torch.manual_seed(0)
    if kind == "SegFormer-B0 (transformers)":
        return SegformerForSemanticSegmentation(SegformerConfig(**MIT_VARIANTS["b0"], num_labels=150)).eval()
    return SSAForSemanticSegmentation(SSAConfig.from_segformer_config("b0", num_labels=150)).eval()


def page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(kind: str, rounds: int, block: int, threads: int, folder: Path) -> dict:
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
        faults = {name: 0 for name in runtimes}
        for _ in range(rounds):
            for name, run in runtimes.items():
                run()  # untimed: the first call after another runtime's block
                faults_before = page_faults()
                for _ in range(block):
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
                faults[name] += page_faults() - faults_before
    (onnx_logits,) = session.run(["logits"], feed)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "median_ms": {name: 1e3 * value for name, value in median.items()},
        "page_faults_per_call": {name: count / (rounds * block) for name, count in faults.items()},
        "ort_speedup": median["eager"] / median["onnxruntime"],
        "compile_speedup": median["eager"] / median["torch.compile"],
        "compile_s": compile_s,
        "max_abs_diff_onnx": float(abs(onnx_logits - expected.numpy()).max()),
        "max_abs_diff_compile": float((compiled_logits - expected).abs().max()),
        "export_checks": export["checks"],
        "times": times,
    }


def measure_all(args) -> dict:
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in MODELS:
            print(f"measuring {kind} ...", flush=True)
            results[kind] = measure(kind, args.rounds, args.block, args.threads, Path(tmp))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=4, help="timed calls per block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)  # internal: the kept-memory run
    args = parser.parse_args()
    if args.child_json:
        args.child_json.write_text(json.dumps(measure_all(args)))
        return
    import onnxruntime

    results = {"default allocator": measure_all(args)}
    print("again with glibc keeping freed memory (child process) ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        child_json = Path(tmp) / "kept.json"
        command = [sys.executable, __file__, "--rounds", str(args.rounds), "--block", str(args.block),
                   "--threads", str(args.threads), "--child-json", str(child_json)]
        subprocess.run(command, env=os.environ | KEEP_FREED_MEMORY, check=True)
        results["freed memory kept"] = json.loads(child_json.read_text())

    lines = ["| model | allocator | eager | torch.compile | onnxruntime | onnxruntime vs eager | compile vs eager | "
             "eager page faults / call | ONNX max abs logit diff |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in MODELS:
        for allocator, by_model in results.items():
            r = by_model[kind]
            ms = r["median_ms"]
            lines.append(f"| {kind} | {allocator} | {ms['eager']:.0f} ms | {ms['torch.compile']:.0f} ms | "
                         f"{ms['onnxruntime']:.0f} ms | {r['ort_speedup']:.2f}x | {r['compile_speedup']:.2f}x | "
                         f"{r['page_faults_per_call']['eager']:,.0f} | {r['max_abs_diff_onnx']:.1e} |")
    options = "" if (args.rounds, args.block) == (5, 4) else f" --rounds {args.rounds} --block {args.block}"
    footer = (f"\n512x512, batch 1, {args.threads} threads (torch and onnxruntime intra-op), CPU; torch "
              f"{torch.__version__}, onnxruntime {onnxruntime.__version__}, ONNX opset 20; medians of "
              f"{args.rounds * args.block} calls per runtime ({args.rounds} rounds of blocks of {args.block}); "
              f"speed-ups are ratios of those medians. 'freed memory kept': a child process with "
              f"MALLOC_MMAP_THRESHOLD_=32 MiB and MALLOC_TRIM_THRESHOLD_=2^62 (eager's best case). "
              f"Target: onnxruntime >= 2x faster than eager. Command: python benchmarks/bench_onnx.py{options}")
    table = "\n".join(lines) + "\n" + footer
    write_results("bench_onnx", table, results)


if __name__ == "__main__":
    main()
