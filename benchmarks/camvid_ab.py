"""SSA-SegFormer-B0 against SegFormer-B0 from scratch on CamVid train (../shared/data/camvid), same seed, recipe and
budget, evaluated on CamVid val; reports both mIoUs and plots the validation curves.

    python benchmarks/camvid_ab.py                        # CPU budget: half resolution, 600 iterations each
    python benchmarks/camvid_ab.py --full --iterations 20000  # full resolution (a GPU run)

Writes benchmarks/results/camvid_ab.{md,json,png}.
"""

import argparse
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_io import write_results  # noqa: E402

from ssa_hf.training import Recipe, train  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist"]


def plot_curves(curves: dict, path: Path, title: str) -> None:
    """A small line chart (PIL only): validation mIoU against iterations, one line per model."""
    width, height, margin = 640, 400, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    steps = [s for points in curves.values() for s, _ in points]
    top = max(v for points in curves.values() for _, v in points)
    y_max = min(1.0, (int(top * 10) + 1) / 10)
    x_max = max(steps)

    def xy(step, value):
        return (margin + (width - 2 * margin) * step / x_max, height - margin - (height - 2 * margin) * value / y_max)

    draw.line([xy(0, 0), xy(x_max, 0)], fill="black")
    draw.line([xy(0, 0), xy(0, y_max)], fill="black")
    for tick in range(0, 11):
        value = y_max * tick / 10
        draw.text((5, xy(0, value)[1] - 6), f"{100 * value:.0f}", fill="black")
    for tick in range(0, 6):
        step = x_max * tick / 5
        draw.text((xy(step, 0)[0] - 10, height - margin + 5), f"{step:.0f}", fill="black")
    colours = {"SSA": (200, 30, 30), "SegFormer": (30, 80, 200)}
    for row, (name, points) in enumerate(curves.items()):
        draw.line([xy(s, v) for s, v in points], fill=colours[name], width=2)
        for s, v in points:
            x, y = xy(s, v)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[name])
        draw.text((width - 170, margin + 15 * row), f"{name}-B0: {100 * points[-1][1]:.2f} mIoU", fill=colours[name])
    draw.text((margin, 10), title, fill="black")
    draw.text((width // 2 - 40, height - 20), "iteration", fill="black")
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--evaluations", type=int, default=6)
    parser.add_argument("--full", action="store_true", help="full resolution 480x360 (default: half, for the CPU)")
    parser.add_argument("--output", type=Path, default=Path("outputs/camvid_ab"))
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"CamVid not found at {args.data} (the project's ../shared/data); nothing to benchmark")
    size = dict(crop_size=(360, 480), scale=(480, 360), eval_scale=(480, 360)) if args.full else dict(
        crop_size=(176, 240), scale=(240, 180), eval_scale=(240, 180))
    every = max(1, args.iterations // args.evaluations)
    recipe = Recipe(name="camvid-ab", convention="camvid", num_labels=11, id2label=dict(enumerate(CLASSES)),
                    encoder="b0", iterations=args.iterations, batch_size=8, lr=3e-4,
                    warmup_iters=max(1, args.iterations // 10), eval_every=every, save_every=args.iterations,
                    ratio_range=(0.5, 2.0), **size)
    run = args.output / time.strftime("run-%Y%m%d-%H%M%S")
    curves, final, timing = {}, {}, {}
    for name, baseline in (("SSA", False), ("SegFormer", True)):
        started = time.time()
        result = train(recipe, str(args.data), run / name.lower(), baseline=baseline, cpu=not args.full)
        timing[name] = time.time() - started
        curves[name] = [(r["step"], r["eval"]["mean_iou"]) for r in result["history"] if "eval" in r]
        final[name] = {k: result["metrics"][k] for k in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        final[name]["per_category_iou"] = dict(zip(CLASSES, result["metrics"]["per_category_iou"]))
    resolution = "480x360" if args.full else "240x180 (half)"
    budget = (f"{args.iterations} iterations each, batch 8, crop {recipe.crop_size[1]}x{recipe.crop_size[0]}, "
              f"AdamW lr {recipe.lr} (head x10), warm-up {recipe.warmup_iters}, poly; from scratch (random MiT-B0); "
              f"CamVid train 367 / val 101 at {resolution}; seed {recipe.seed}")
    lines = ["| model | val mIoU | mAcc | aAcc | training time |", "|---|---|---|---|---|"]
    for name in curves:
        m = final[name]
        lines.append(f"| {name}-B0 | {100 * m['mean_iou']:.2f} | {100 * m['mean_accuracy']:.2f} | "
                     f"{100 * m['overall_accuracy']:.2f} | {timing[name] / 60:.1f} min |")
    table = "\n".join(lines) + f"\n\nBudget: {budget}.\nCommand: python benchmarks/camvid_ab.py" + (
        " --full" if args.full else "") + f" --iterations {args.iterations}"
    results = write_results("camvid_ab", table, {"budget": budget, "final": final, "curves": curves})
    plot_curves(curves, results / "camvid_ab.png", f"CamVid val mIoU, {resolution}, {args.iterations} iterations")


if __name__ == "__main__":
    main()
