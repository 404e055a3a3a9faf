"""SSA against the plain model from scratch on CamVid train (../shared/data/camvid), same seed, recipe and budget,
evaluated on CamVid val; reports both mIoUs and plots the learning curves (matplotlib: the bench extra). `--model
mit-b0` (the default) compares SSA-SegFormer-B0 with transformers' SegFormer-B0; `--model seaformer-b` compares
SSA-SeaFormer-B with SeaFormer-B and its plain light head; `--model afformer-b` SSA-AFFormer-B with AFFormer-B.

    python benchmarks/camvid_ab.py                        # CPU budget: half resolution, 600 iterations each
    python benchmarks/camvid_ab.py --model seaformer-b    # the same for SeaFormer-B
    python benchmarks/camvid_ab.py --model afformer-b     # ... and AFFormer-B
    python benchmarks/camvid_ab.py --full --iterations 20000  # full resolution (a GPU run)
    python benchmarks/camvid_ab.py --replot               # redraw the plot from the stored results

Writes benchmarks/results/camvid_ab.{md,json,png} (SeaFormer-B: camvid_ab_seaformer_b.*, AFFormer-B:
camvid_ab_afformer_b.*).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_io import write_results  # noqa: E402

from ssa_hf.plots import learning_curves  # noqa: E402
from ssa_hf.training import Recipe, train  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist"]
# --model: (recipe fields, results name, the model's name in the table, the baseline's)
MODELS = {
    "mit-b0": (dict(encoder="b0"), "camvid_ab", "B0", "SegFormer-B0"),
    "seaformer-b": (dict(encoder="seaformer-base", decoder_type="seaformer",
                         custom_keys={"head": {"lr_mult": 10.0}, "position.embedding": {"decay_mult": 0.0}}),
                    "camvid_ab_seaformer_b", "SeaFormer-B", "SeaFormer-B (plain head)"),
    "afformer-b": (dict(encoder="afformer-base", decoder_type="afformer", custom_keys={}),  # the official: no groups
                   "camvid_ab_afformer_b", "AFFormer-B", "AFFormer-B (plain head)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", choices=sorted(MODELS), default="mit-b0", help="the encoder and decoder to compare")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--evaluations", type=int, default=6)
    parser.add_argument("--full", action="store_true", help="full resolution 480x360 (default: half, for the CPU)")
    parser.add_argument("--output", type=Path, default=Path("outputs/camvid_ab"))
    parser.add_argument("--replot", action="store_true",
                        help="only redraw camvid_ab.png from benchmarks/results/camvid_ab.json")
    args = parser.parse_args()
    fields, results_name, model_name, baseline_name = MODELS[args.model]
    results_json = Path(__file__).resolve().parent / "results" / f"{results_name}.json"
    if args.replot:
        stored = json.loads(results_json.read_text())
        histories = stored.get("histories") or {name: [{"step": step, "eval": {"mean_iou": value}}
                                                       for step, value in points]
                                                for name, points in stored["curves"].items()}
        print(learning_curves(histories, results_json.with_suffix(".png"), stored.get("title", f"CamVid ({stored['budget'].split(';')[0]})")))
        return
    if not args.data.is_dir():
        raise SystemExit(f"CamVid not found at {args.data} (the project's ../shared/data); nothing to benchmark")
    size = dict(crop_size=(360, 480), scale=(480, 360), eval_scale=(480, 360)) if args.full else dict(
        crop_size=(176, 240), scale=(240, 180), eval_scale=(240, 180))
    every = max(1, args.iterations // args.evaluations)
    recipe = Recipe(name="camvid-ab", convention="camvid", num_labels=11, id2label=dict(enumerate(CLASSES)),
                    iterations=args.iterations, batch_size=8, lr=3e-4,
                    warmup_iters=max(1, args.iterations // 10), eval_every=every, save_every=args.iterations,
                    ratio_range=(0.5, 2.0), **size, **fields)
    run = args.output / time.strftime("run-%Y%m%d-%H%M%S")
    curves, final, timing, histories = {}, {}, {}, {}
    for name, baseline in ((f"SSA-{model_name}", False), (baseline_name, True)):
        started = time.time()
        result = train(recipe, str(args.data), run / name.lower(), baseline=baseline, cpu=not args.full)
        timing[name] = time.time() - started
        curves[name] = [(r["step"], r["eval"]["mean_iou"]) for r in result["history"] if "eval" in r]
        histories[name] = [{k: v for k, v in r.items() if k in ("step", "loss", "loss/main", "eval")}
                           for r in result["history"]]
        final[name] = {k: result["metrics"][k] for k in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        final[name]["per_category_iou"] = dict(zip(CLASSES, result["metrics"]["per_category_iou"]))
    resolution = "480x360" if args.full else "240x180 (half)"
    budget = (f"{args.iterations} iterations each, batch 8, crop {recipe.crop_size[1]}x{recipe.crop_size[0]}, "
              f"AdamW lr {recipe.lr}{' (head x10)' if 'head' in recipe.custom_keys else ''}, warm-up {recipe.warmup_iters}, poly; from scratch (random "
              f"{model_name}); "
              f"CamVid train 367 / val 101 at {resolution}; seed {recipe.seed}")
    lines = ["| model | val mIoU | mAcc | aAcc | training time |", "|---|---|---|---|---|"]
    for name in curves:
        m = final[name]
        lines.append(f"| {name} | {100 * m['mean_iou']:.2f} | {100 * m['mean_accuracy']:.2f} | "
                     f"{100 * m['overall_accuracy']:.2f} | {timing[name] / 60:.1f} min |")
    table = "\n".join(lines) + f"\n\nBudget: {budget}.\nCommand: python benchmarks/camvid_ab.py" + (
        f" --model {args.model}" if args.model != "mit-b0" else "") + (" --full" if args.full else "") + \
        f" --iterations {args.iterations}"
    title = f"CamVid, {resolution}, {args.iterations} iterations each, from scratch ({model_name})"
    results = write_results(results_name, table, {"budget": budget, "final": final, "curves": curves,
                                                  "histories": histories, "title": title})
    learning_curves(histories, results / f"{results_name}.png", title)


if __name__ == "__main__":
    main()
