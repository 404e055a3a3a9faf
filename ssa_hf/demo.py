"""The main job (`make demo`, `ssa-seg demo`): train SSA-SegFormer-B0 and the plain SegFormer-B0 baseline the same way
on an embedded generated dataset (or `data`, e.g. ../shared/data/camvid), compare their mIoU, write overlay images,
save a hub-ready folder and reload it through `pipeline("image-segmentation")`.

    ssa-seg demo                                # generated street scenes (time: README, Hardware)
    ssa-seg demo --data ../shared/data/camvid   # CamVid at half resolution, same budget

Every run writes a new folder under outputs/demo/ (nothing earlier is overwritten).
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .data import load_split
from .evaluation import predict_label_map
from .synthetic import CLASSES, generate
from .training import Recipe, train
from .visualization import MASK_PALETTE, comparison_sheet

CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                  "Bicyclist"]


def demo_recipe(data: Path | None, iterations: int, seed: int = 0) -> Recipe:
    common = dict(encoder="b0", iterations=iterations, batch_size=8, warmup_iters=max(1, iterations // 10),
                  lr=3e-4, eval_every=iterations, save_every=iterations, ratio_range=(0.75, 1.5), seed=seed)
    if data is None:
        return Recipe(name="demo-scenes", num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
                      crop_size=(128, 128), scale=(160, 128), eval_scale=(160, 128), **common)
    if (data / "train" / "labels").is_dir():  # the CamVid layout: half resolution to fit the budget
        return Recipe(name="demo-camvid", convention="camvid", num_labels=11, id2label=dict(enumerate(CAMVID_CLASSES)),
                      crop_size=(160, 160), scale=(240, 180), eval_scale=(240, 180), **common)
    raise ValueError(f"{data}: the demo knows the CamVid layout; for other data use `ssa-seg train --recipe ...`")


SPREAD = Path(__file__).with_name("demo_spread.json")  # written by benchmarks/demo_seeds.py


def spread_note(lead: float, generated: bool, iterations: int) -> str:
    """What one run's SSA - SegFormer mIoU gap means: set against the spread of the same run over seeds, measured by
    benchmarks/demo_seeds.py (for the generated scenes at the measured iteration count only)."""
    measured = json.loads(SPREAD.read_text()) if SPREAD.is_file() else None
    if measured is None or not generated or iterations != measured["iterations"]:
        return (f"SSA - SegFormer: {lead:+.2f} mIoU from one seed. The spread over seeds is measured for the default "
                f"demo only (docs/benchmarks.md, 'The demo over seeds'), not for this setting: a gap of a few points "
                f"here may be noise; `--seed N` runs it again with another seed.")
    spread = measured["lead"]
    return (f"SSA - SegFormer: {lead:+.2f} mIoU in this run. Over {len(measured['rows'])} seeds of this same demo "
            f"({measured['command']}) SSA led by {spread['mean']:+.2f} (standard deviation {spread['stdev']:.2f}, "
            f"range {spread['min']:+.2f} to {spread['max']:+.2f}; each model's own seed-to-seed standard deviation: "
            f"SSA {spread['ssa_stdev']:.2f}, SegFormer {spread['segformer_stdev']:.2f}). The scenes give every image "
            f"its own colour cast, the variation SSA adapts its prototypes to; what SSA does on real data is in "
            f"docs/benchmarks.md (CamVid A/B).")


def run_demo(data: Path | None = None, iterations: int = 300, output: Path = Path("outputs/demo"),
             num_workers: int = 1, eval_limit: int | None = None, seed: int = 0) -> dict:
    """Train both models, print the comparison, write the overlays and check the saved folder in a pipeline."""
    output = Path(output)
    run = output / time.strftime("run-%Y%m%d-%H%M%S")
    while run.exists():  # two runs in one second: never reuse a folder
        run = run.with_name(run.name + "-1")
    source = Path(data) if data is not None else None
    if source is None:
        source = generate(output / "scenes")
        print(f"generated dataset: {source} ({len(list((source / 'train' / 'images').iterdir()))} train images)")
    recipe = demo_recipe(Path(data) if data is not None else None, iterations, seed)
    names = [recipe.id2label[k] for k in sorted(recipe.id2label)]

    results, started = {}, time.time()
    for label, baseline in (("SSA", False), ("SegFormer", True)):
        print(f"\n== training {label}-B0: {recipe.iterations} iterations, batch {recipe.batch_size}, "
              f"crop {recipe.crop_size[1]}x{recipe.crop_size[0]}")
        results[label] = train(recipe, str(source), run / label.lower(), baseline=baseline, cpu=True,
                               num_workers=num_workers, eval_limit=eval_limit, command=["ssa-seg", "demo"])
    elapsed = time.time() - started

    print("\n| model | mIoU | mAcc | aAcc |\n|---|---|---|---|")
    summary = {}
    for label, result in results.items():
        m = result["metrics"]
        summary[label] = {k: m[k] for k in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        print(f"| {label}-B0 | {100 * m['mean_iou']:.2f} | {100 * m['mean_accuracy']:.2f} | "
              f"{100 * m['overall_accuracy']:.2f} |")
    print(f"(same data, seed {recipe.seed}, recipe and {recipe.iterations} iterations each; training took "
          f"{elapsed / 60:.1f} min)")
    lead = 100 * (summary["SSA"]["mean_iou"] - summary["SegFormer"]["mean_iou"])
    print(spread_note(lead, generated=data is None, iterations=recipe.iterations))

    try:
        from .plots import learning_curves

        curves = learning_curves({f"{label}-B0": result["history"] for label, result in results.items()},
                                 run / "curves.png", f"{recipe.name}: {recipe.iterations} iterations each, batch "
                                                     f"{recipe.batch_size}, same seed and recipe")
        print(f"learning curves: {curves}")
    except ImportError as error:
        print(f"note: {error}; no learning curves drawn")

    # Overlays through the saved image processor, as pipeline users see them.
    processor = results["SSA"]["processor"]
    convention = recipe.label_convention()
    rows = []
    validation = load_split(str(source), "validation")
    for index in range(min(4, len(validation))):
        row = validation[index]
        image = row["image"].convert("RGB")
        truth = convention.apply(np.array(row["annotation"]))
        predictions = [predict_label_map(results[label]["model"].eval(), processor, image).numpy()
                       for label in ("SSA", "SegFormer")]
        rows.append((np.asarray(image), truth, *predictions))
    sheet = run / "overlays.png"
    comparison_sheet(rows, names, MASK_PALETTE, sheet, ignore_index=convention.ignore_index)
    print(f"overlays: {sheet}")

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    final = run / "ssa" / "final"
    verbosity = hf_logging.get_verbosity()
    # The pipeline logs "not supported for image-segmentation" for every model outside transformers' own tables,
    # registered ones included; it works all the same.
    hf_logging.set_verbosity(hf_logging.CRITICAL)
    segmenter = pipeline("image-segmentation", model=str(final))
    hf_logging.set_verbosity(verbosity)
    found = segmenter(Image.fromarray(rows[0][0]))
    print(f"hub-ready folder: {final} -> pipeline found {[r['label'] for r in found]}")
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    # The resumable checkpoints (weights again, optimiser state) are most of what the trainings wrote; the demo does
    # not resume, so it lets them go and keeps the saved models, histories, plots and overlays.
    freed = 0
    for label in results:
        checkpoints = run / label.lower() / "checkpoints"
        freed += sum(f.stat().st_size for f in checkpoints.rglob("*") if f.is_file())
        shutil.rmtree(checkpoints, ignore_errors=True)
    kept = sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
    print(f"kept {kept / 2**20:.0f} MB in {run} (models, histories, plots); let the resumable checkpoints go "
          f"({freed / 2**20:.0f} MB: `ssa-seg train` keeps them, the demo does not resume)")
    return {"summary": summary, "run": run, "pipeline_labels": [r["label"] for r in found]}
