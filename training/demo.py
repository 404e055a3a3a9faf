"""The main job (`make demo`): train SSA-SegFormer-B0 and the plain SegFormer-B0 baseline the same way on an embedded
generated dataset (or `--data`, e.g. ../shared/data/camvid), compare their mIoU, write overlay images with a legend,
save a hub-ready folder and reload it through `pipeline("image-segmentation")`.

    python training/demo.py                                # generated street scenes, about 5 minutes on 2 CPU cores
    python training/demo.py --data ../shared/data/camvid   # CamVid at half resolution, same budget

Every run writes a new folder under outputs/demo/ (nothing earlier is overwritten).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from ssa_hf.evaluation import predict_probabilities  # noqa: E402
from ssa_hf.transforms import EvalTransform  # noqa: E402
from training.synthetic import CLASSES, generate  # noqa: E402
from training.train import Recipe, SegmentationDataset, load_split, train  # noqa: E402

CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                  "Bicyclist"]


def demo_recipe(data: Path | None, iterations: int) -> Recipe:
    common = dict(encoder="b0", iterations=iterations, batch_size=8, warmup_iters=max(1, iterations // 10),
                  lr=3e-4, eval_every=iterations, save_every=iterations, ratio_range=(0.75, 1.5))
    if data is None:
        return Recipe(name="demo-scenes", num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
                      crop_size=(128, 128), scale=(160, 128), eval_scale=(160, 128), **common)
    if (data / "train" / "labels").is_dir():  # the CamVid layout: half resolution to fit the budget
        return Recipe(name="demo-camvid", convention="camvid", num_labels=11, id2label=dict(enumerate(CAMVID_CLASSES)),
                      crop_size=(160, 160), scale=(240, 180), eval_scale=(240, 180), **common)
    raise SystemExit(f"{data}: the demo knows the CamVid layout; for other data use training/train.py --recipe ...")


def colourise(labels: np.ndarray, palette: list) -> np.ndarray:
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    table[255] = (0, 0, 0)
    return table[labels]


def predict(model, dataset: SegmentationDataset, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = dataset.rows[index]
    item = dataset[index]
    probabilities = predict_probabilities(model.eval(), item["pixel_values"][None], output_size=item["labels"].shape)
    return np.asarray(row["image"].convert("RGB")), item["labels"].numpy(), probabilities.argmax(1)[0].numpy()


# Distinct colours for label maps (the scenes' own palette is too close to their textures to read masks by).
MASK_PALETTE = [(0, 190, 255), (230, 90, 20), (20, 110, 30), (150, 60, 170), (190, 240, 40), (20, 40, 200),
                (255, 220, 0), (255, 0, 120), (0, 230, 180), (120, 120, 120), (250, 170, 200)]


def overlay_sheet(rows: list, names: list[str], palette: list, path: Path) -> None:
    """One row per image: image | ground truth | SSA | SegFormer label maps (black = ignored), plus a legend."""
    height, width = rows[0][0].shape[:2]
    columns = ["image", "ground truth", "SSA", "SegFormer"]
    header, legend_height = 18, 22
    sheet = Image.new("RGB", (4 * width, header + len(rows) * height + legend_height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):
        draw.text((c * width + 4, 3), title, fill="black")
    for r, (image, truth, ssa, baseline) in enumerate(rows):
        tiles = [image] + [colourise(m, palette) for m in (truth, ssa, baseline)]
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (c * width, header + r * height))
    present = sorted({int(v) for _, truth, *_ in rows for v in np.unique(truth) if v != 255})
    x = 4
    for k in present:
        draw.rectangle([x, sheet.height - 16, x + 12, sheet.height - 4], fill=tuple(palette[k]))
        draw.text((x + 16, sheet.height - 17), names[k], fill="black")
        x += 22 + 7 * len(names[k])
    sheet.save(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a CamVid-layout folder; default: generated street scenes")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--output", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--eval-limit", type=int, help="evaluate on the first N validation images only")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run = args.output / time.strftime("run-%Y%m%d-%H%M%S")
    data = args.data
    if data is None:
        data = generate(args.output / "scenes")
        print(f"generated dataset: {data} ({len(list((data / 'train' / 'images').iterdir()))} train images)")
    recipe = demo_recipe(args.data, args.iterations)
    palette = MASK_PALETTE
    names = [recipe.id2label[k] for k in sorted(recipe.id2label)]

    results, started = {}, time.time()
    for label, baseline in (("SSA", False), ("SegFormer", True)):
        print(f"\n== training {label}-B0: {recipe.iterations} iterations, batch {recipe.batch_size}, "
              f"crop {recipe.crop_size[1]}x{recipe.crop_size[0]}")
        results[label] = train(recipe, str(data), run / label.lower(), baseline=baseline, cpu=True,
                               num_workers=args.num_workers, eval_limit=args.eval_limit)
    elapsed = time.time() - started

    print("\n| model | mIoU | mAcc | aAcc |\n|---|---|---|---|")
    summary = {}
    for label, result in results.items():
        m = result["metrics"]
        summary[label] = {k: m[k] for k in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        print(f"| {label}-B0 | {100 * m['mean_iou']:.2f} | {100 * m['mean_accuracy']:.2f} | "
              f"{100 * m['overall_accuracy']:.2f} |")
    print(f"(same data, seed, recipe and {recipe.iterations} iterations each; training took {elapsed / 60:.1f} min)")

    eval_set = SegmentationDataset(load_split(str(data), "validation"), recipe.label_convention(),
                                   EvalTransform(scale=tuple(recipe.eval_scale)))
    rows = []
    for index in range(min(4, len(eval_set))):
        image, truth, ssa = predict(results["SSA"]["model"], eval_set, index)
        rows.append((image, truth, ssa, predict(results["SegFormer"]["model"], eval_set, index)[2]))
    sheet = run / "overlays.png"
    overlay_sheet(rows, names, palette, sheet)
    print(f"overlays: {sheet}")

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    final = run / "ssa" / "final"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(hf_logging.CRITICAL)  # the pipeline logs "not supported" for any custom model class
    segmenter = pipeline("image-segmentation", model=str(final), trust_remote_code=True)
    hf_logging.set_verbosity(verbosity)
    found = segmenter(Image.fromarray(rows[0][0]))
    print(f"hub-ready folder: {final} -> pipeline found {[r['label'] for r in found]}")
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"summary": summary, "run": run, "pipeline_labels": [r["label"] for r in found]}


if __name__ == "__main__":
    main()
