"""SSA against SegFormer on the CPU: inference latency (B0 and B2), a training step (time and peak memory), and the
SSA teacher + losses against an official-style loop implementation.

Every time ratio comes from interleaved pairs in one process, after warm-up (the two sides run back to back, so slow
drift of a shared machine cancels in each pair's ratio); the table gives the median of the per-pair ratios and their
spread (min - max). Peak memory is measured in a fresh subprocess per side (its first step's peak RSS growth). The
compiled rows compare torch.compile (inductor) with eager SSA-B0. Prints a table and writes it to
benchmarks/results/bench_model.md (and .json).

    python benchmarks/bench_model.py            # the full table (about 5 minutes on 2 cores)
    python benchmarks/bench_model.py --quick    # fewer repeats
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_io import write_results


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _models(kind: str, variant: str, num_labels: int = 150):
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from ssa_hf import MIT_VARIANTS, SSAConfig, SSAForSemanticSegmentation

    torch.manual_seed(0)
    if kind == "plain":  # ssa_hf's own decoder ending in the plain 1x1 classifier: SSA's overhead alone
        from ssa_hf.modeling_ssa import SSAClassifierOutput

        model = SSAForSemanticSegmentation(SSAConfig.from_segformer_config(variant, num_labels=num_labels))
        classifier = model.decode_head.classifier

        def plain_classifier(features, labels_small=None):
            logits = torch.nn.functional.conv2d(features, classifier.weight, classifier.bias)
            return SSAClassifierOutput(logits=logits, coarse_logits=logits)

        classifier.forward = plain_classifier
        return model
    if kind == "segformer":
        return SegformerForSemanticSegmentation(SegformerConfig(**MIT_VARIANTS[variant], num_labels=num_labels))
    return SSAForSemanticSegmentation(SSAConfig.from_segformer_config(variant, num_labels=num_labels))


def worker_inference(variant: str, repeats: int) -> dict:
    """SegFormer and SSA forward passes alternating in one process: each pair runs back to back, so slow drift of a
    shared machine cancels in the per-pair ratio."""
    import torch

    models = {kind: _models(kind, variant).eval() for kind in ("segformer", "ssa", "plain")}
    pixel_values = torch.randn(1, 3, 512, 512)
    times = {kind: [] for kind in models}
    with torch.inference_mode():
        for index in range(repeats + 3):  # 3 warm-up pairs
            for kind, model in models.items():
                start = time.perf_counter()
                model(pixel_values=pixel_values)
                if index >= 3:
                    times[kind].append(time.perf_counter() - start)
    pair_ratios = [s / b for s, b in zip(times["ssa"], times["segformer"])]
    plain_ratios = [s / b for s, b in zip(times["ssa"], times["plain"])]
    return {
        "segformer_median_s": statistics.median(times["segformer"]),
        "ssa_median_s": statistics.median(times["ssa"]),
        "plain_median_s": statistics.median(times["plain"]),
        "median_pair_ratio": statistics.median(pair_ratios),
        "median_plain_ratio": statistics.median(plain_ratios),
        "times": times,
    }


def worker_train(kind: str, variant: str, repeats: int) -> dict:
    import torch

    model = _models(kind, variant).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixel_values = torch.randn(2, 3, 512, 512)
    labels = torch.randint(0, 150, (2, 512, 512))
    labels[:, :32] = 255

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()

    before = _rss_mb()
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    peak = _peak_mb() - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "times": times, "first_s": first, "peak_mb": peak}


def _training_step(kind: str, variant: str, compiled: bool = False):
    import torch

    model = _models(kind, variant).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixel_values = torch.randn(2, 3, 512, 512)
    labels = torch.randint(0, 150, (2, 512, 512))
    labels[:, :32] = 255
    forward = torch.compile(model) if compiled else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward(pixel_values=pixel_values, labels=labels).loss.backward()
        optimizer.step()

    return step


def _pairs(baseline, candidate, repeats: int, warmup: int = 1) -> dict:
    """Interleaved timing: `warmup` untimed calls of each, then `repeats` pairs (baseline, candidate)."""
    for _ in range(warmup):
        baseline()
        candidate()
    times = {"baseline": [], "candidate": []}
    for _ in range(repeats):
        for side, run in (("baseline", baseline), ("candidate", candidate)):
            start = time.perf_counter()
            run()
            times[side].append(time.perf_counter() - start)
    ratios = [c / b for b, c in zip(times["baseline"], times["candidate"])]
    return {"baseline_median_s": statistics.median(times["baseline"]),
            "candidate_median_s": statistics.median(times["candidate"]),
            "median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
            "times": times}


def worker_train_pairs(variant: str, repeats: int) -> dict:
    """SegFormer and SSA training steps (forward, backward, AdamW) alternating in one process."""
    return _pairs(_training_step("segformer", variant), _training_step("ssa", variant), repeats)


def worker_compiled(variant: str, repeats: int) -> dict:
    """SSA inference and training step, eager against torch.compile (inductor), alternating in one process."""
    import torch

    model = _models("ssa", variant).eval()
    pixel_values = torch.randn(1, 3, 512, 512)
    with torch.inference_mode():
        model(pixel_values=pixel_values)  # installs transformers' output hooks before compiling
    compiled = torch.compile(model, fullgraph=True)
    start = time.perf_counter()
    with torch.inference_mode():
        compiled(pixel_values=pixel_values)
    inference_compile_s = time.perf_counter() - start

    def eager_inference():
        with torch.inference_mode():
            model(pixel_values=pixel_values)

    def compiled_inference():
        with torch.inference_mode():
            compiled(pixel_values=pixel_values)

    inference = _pairs(eager_inference, compiled_inference, repeats)
    eager_step, compiled_step = _training_step("ssa", variant), _training_step("ssa", variant, compiled=True)
    start = time.perf_counter()
    compiled_step()
    training_compile_s = time.perf_counter() - start
    training = _pairs(eager_step, compiled_step, max(2, repeats // 3))
    return {"inference": inference, "training": training, "inference_compile_s": inference_compile_s,
            "training_compile_s": training_compile_s}


def worker_losses(kind: str, scope: str, repeats: int) -> dict:
    """SSA training-only work at K=150, 128x128 features, 512x512 labels, batch 4, forward and backward.

    scope "terms": the eight loss terms from fixed classifier outputs (leaf tensors), i.e. the SSA losses alone.
    scope "head": the classifier with its teacher and the losses, from a fixed decoder feature.
    kind "vectorised" is ssa_hf; kind "loop" the official-style implementation in loop_reference.py.
    """
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loop_reference import losses_loop, teacher_loop

    from ssa_hf import SSAClassifier, SSALoss
    from ssa_hf.ops_ssa import downsample_labels

    torch.manual_seed(0)
    batch, channels, num_classes, side = 4, 256, 150, 128
    clf = SSAClassifier(channels, num_classes, dropout=0.0).train()
    loss = SSALoss(num_classes, {
        "main": 1, "coarse": 1, "teacher": 1, "response_distillation": 1, "dice_student": 1, "dice_teacher": 1,
        "semantic_distillation": 10, "spatial_distillation": 0.4,
    })
    features = torch.randn(batch, channels, side, side, requires_grad=True)
    # Realistic labels: 12 classes per image in 64x64 blocks, an ignored band at the bottom.
    classes = torch.tensor([0, 3, 7, 12, 20, 33, 41, 58, 77, 90, 120, 149])
    labels = classes[torch.randint(0, 12, (batch, 8, 8))].repeat_interleave(64, 1).repeat_interleave(64, 2)
    labels[:, 500:] = 255
    labels_small = downsample_labels(labels, (side, side))
    with torch.no_grad():
        fixed = clf(features, labels_small)
    leaves = {
        name: getattr(fixed, name).clone().requires_grad_(True)
        for name in ("logits", "coarse_logits", "teacher_logits", "semantic_prototypes",
                     "teacher_semantic_prototypes", "spatial_prototypes", "teacher_spatial_prototypes")
    }

    def terms_vectorised():
        total, terms = loss(**leaves, labels=labels, labels_small=labels_small)
        total.backward()
        return terms

    def terms_loop():
        student = type("Student", (), {k: leaves[k] for k in (
            "logits", "coarse_logits", "semantic_prototypes", "spatial_prototypes")})
        terms = losses_loop(student, leaves["teacher_logits"], leaves["teacher_semantic_prototypes"],
                            leaves["teacher_spatial_prototypes"], labels)
        sum(terms.values()).backward()
        return terms

    def head_vectorised():
        out = clf(features, labels_small)
        total, terms = loss(
            out.logits, out.coarse_logits, out.teacher_logits, out.semantic_prototypes,
            out.teacher_semantic_prototypes, out.spatial_prototypes, out.teacher_spatial_prototypes, labels,
            labels_small,
        )
        total.backward()
        return terms

    def head_loop():
        out = clf(features)
        position = clf.position_encoder(features)
        teacher_logits, semantic, spatial = teacher_loop(clf, features, position, labels_small)
        terms = losses_loop(out, teacher_logits, semantic, spatial, labels)
        sum(terms.values()).backward()
        return terms

    runs = {("vectorised", "terms"): terms_vectorised, ("loop", "terms"): terms_loop,
            ("vectorised", "head"): head_vectorised, ("loop", "head"): head_loop}

    def fresh(run):
        def call():
            for tensor in (features, *leaves.values()):
                tensor.grad = None
            clf.zero_grad(set_to_none=True)
            return run()
        return call

    if kind == "pairs":  # the loop implementation against ssa_hf's, alternating
        return _pairs(fresh(runs["loop", scope]), fresh(runs["vectorised", scope]), repeats)
    run = runs[kind, scope]
    before = _rss_mb()
    start = time.perf_counter()
    terms = run()
    first = time.perf_counter() - start
    peak = _peak_mb() - before
    times = []
    for _ in range(repeats):
        for tensor in (features, *leaves.values()):
            tensor.grad = None
        clf.zero_grad(set_to_none=True)
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times), "times": times, "first_s": first, "peak_mb": peak,
        "terms": {k: float(v.detach()) for k, v in terms.items()},
    }


def run_worker(args: list[str], threads: int) -> dict:
    command = [sys.executable, __file__, "--threads", str(threads), "--worker", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        name, *rest = args.worker
        if name == "inference":
            result = worker_inference(rest[0], int(rest[1]))
        elif name == "train":
            result = worker_train(rest[0], rest[1], int(rest[2]))
        elif name == "train_pairs":
            result = worker_train_pairs(rest[0], int(rest[1]))
        elif name == "compiled":
            result = worker_compiled(rest[0], int(rest[1]))
        else:
            result = worker_losses(rest[0], rest[1], int(rest[2]))
        print(json.dumps(result))
        return

    from tqdm.auto import tqdm

    repeats = {"b0": 10 if args.quick else 30, "b2": 4 if args.quick else 10, "train": 3 if args.quick else 6,
               "loss": 2 if args.quick else 5, "compiled": 6 if args.quick else 12}
    jobs = {
        "infer_b0": ["inference", "b0", repeats["b0"]],
        "infer_b2": ["inference", "b2", repeats["b2"]],
        "train_segformer_b0": ["train", "segformer", "b0", repeats["train"]],
        "train_ssa_b0": ["train", "ssa", "b0", repeats["train"]],
        "terms_vectorised": ["losses", "vectorised", "terms", repeats["loss"]],
        "terms_loop": ["losses", "loop", "terms", repeats["loss"]],
        "head_vectorised": ["losses", "vectorised", "head", repeats["loss"]],
        "head_loop": ["losses", "loop", "head", repeats["loss"]],
        "train_pairs_b0": ["train_pairs", "b0", repeats["train"]],
        "terms_pairs": ["losses", "pairs", "terms", repeats["loss"]],
        "head_pairs": ["losses", "pairs", "head", repeats["loss"]],
        "compiled_b0": ["compiled", "b0", repeats["compiled"]],
    }
    results = {}
    for name, job in tqdm(jobs.items(), desc="benchmarks"):
        results[name] = run_worker([str(v) for v in job], args.threads)

    max_term_diff = 0.0
    for scope in ("terms", "head"):
        vectorised, loop = results[f"{scope}_vectorised"]["terms"], results[f"{scope}_loop"]["terms"]
        max_term_diff = max(max_term_diff, *(abs(vectorised[k] - loop[k]) / max(1.0, abs(loop[k])) for k in loop))
        if max_term_diff > 1e-4:
            raise RuntimeError(f"the two loss implementations disagree: {vectorised} vs {loop}")

    def ratio(a, b, key="median_s"):
        return results[a][key] / results[b][key]

    def spread(pairs: dict, invert: bool = False) -> str:
        if invert:  # "x faster": baseline / candidate
            return f"{1 / pairs['median_ratio']:.1f}x faster ({1 / pairs['max_ratio']:.1f}-{1 / pairs['min_ratio']:.1f})"
        return f"{pairs['median_ratio']:.3f} ({pairs['min_ratio']:.3f}-{pairs['max_ratio']:.3f})"

    def inference_spread(key: str, name: str) -> str:
        ratios = [s / b for s, b in zip(results[name]["times"]["ssa"], results[name]["times"][key])]
        return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"

    train, terms, head, compiled = (results["train_pairs_b0"], results["terms_pairs"], results["head_pairs"],
                                    results["compiled_b0"])
    rows = [
        ("Inference B0, 512x512, batch 1", f"{results['infer_b0']['segformer_median_s'] * 1e3:.0f} ms",
         f"{results['infer_b0']['ssa_median_s'] * 1e3:.0f} ms", inference_spread("segformer", "infer_b0"), "<= 1.15"),
        ("Inference B0: SSA's own overhead (ssa_hf decoder + plain 1x1 classifier as baseline)",
         f"{results['infer_b0']['plain_median_s'] * 1e3:.0f} ms",
         f"{results['infer_b0']['ssa_median_s'] * 1e3:.0f} ms", inference_spread("plain", "infer_b0"), ""),
        ("Inference B2, 512x512, batch 1", f"{results['infer_b2']['segformer_median_s'] * 1e3:.0f} ms",
         f"{results['infer_b2']['ssa_median_s'] * 1e3:.0f} ms", inference_spread("segformer", "infer_b2"),
         "below B0's"),
        ("Training step B0, batch 2: time", f"{train['baseline_median_s']:.2f} s",
         f"{train['candidate_median_s']:.2f} s", spread(train), "<= 1.5"),
        ("Training step B0, batch 2: peak memory", f"{results['train_segformer_b0']['peak_mb']:.0f} MB",
         f"{results['train_ssa_b0']['peak_mb']:.0f} MB",
         f"{ratio('train_ssa_b0', 'train_segformer_b0', 'peak_mb'):.3f}", "<= 1.5"),
        ("SSA losses, 8 terms fwd+bwd (K=150, 128^2 -> 512^2, batch 4): time",
         f"{terms['baseline_median_s']:.2f} s", f"{terms['candidate_median_s']:.2f} s", spread(terms, True), ">= 5x"),
        ("SSA losses: peak memory", f"{results['terms_loop']['peak_mb']:.0f} MB",
         f"{results['terms_vectorised']['peak_mb']:.0f} MB",
         f"{ratio('terms_loop', 'terms_vectorised', 'peak_mb'):.1f}x less", ""),
        ("SSA head + teacher + losses fwd+bwd (same sizes): time", f"{head['baseline_median_s']:.2f} s",
         f"{head['candidate_median_s']:.2f} s", spread(head, True), ""),
        ("SSA head + teacher + losses: peak memory", f"{results['head_loop']['peak_mb']:.0f} MB",
         f"{results['head_vectorised']['peak_mb']:.0f} MB",
         f"{ratio('head_loop', 'head_vectorised', 'peak_mb'):.1f}x less", ""),
        (f"SSA-B0 inference, torch.compile (inductor, fullgraph; compiles in {compiled['inference_compile_s']:.0f} s)"
         " vs eager", f"{compiled['inference']['baseline_median_s'] * 1e3:.0f} ms",
         f"{compiled['inference']['candidate_median_s'] * 1e3:.0f} ms", spread(compiled["inference"]), ""),
        (f"SSA-B0 training step, torch.compile (inductor; compiles in {compiled['training_compile_s']:.0f} s) vs eager",
         f"{compiled['training']['baseline_median_s']:.2f} s", f"{compiled['training']['candidate_median_s']:.2f} s",
         spread(compiled["training"]), ""),
    ]
    header = ("measurement", "baseline (SegFormer / loop / eager)", "SSA (ssa_hf)", "ratio (spread)", "target")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    footer = (
        f"\ntorch {torch.__version__}, {args.threads} threads, CPU; repeats {repeats}. Every time ratio = median of "
        f"per-pair ratios (the two sides alternate in one process after warm-up; in brackets the range over the "
        f"pairs); the 'x faster' rows invert it. Peak memory = peak RSS growth of a fresh process over its first "
        f"step. Loss terms of both implementations agree within {max_term_diff:.1e} (relative). Command: "
        f"python benchmarks/bench_model.py" + (" --quick" if args.quick else "")
    )
    table = "\n".join(lines) + "\n" + footer
    write_results("bench_model", table, results)


if __name__ == "__main__":
    main()
