# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fine-tuning SSA on a SegFormer
#
# This tutorial takes a trained SegFormer, puts the SSA classifier on it, fine-tunes it on CamVid, compares it with
# the plain SegFormer fine-tuned the same way, looks at the predictions, and saves a folder that is ready for the
# hub. It runs on a CPU: the default budget (300 iterations for each model, CamVid at half resolution) took 4.5
# minutes on 2 cores.
#
# Everything the tutorial reads can be changed through environment variables, so the same file runs as a notebook,
# as a script (`python docs/tutorials/fine_tuning.py`), and in the test suite at a tiny budget:
#
# | variable | default | what it is |
# |---|---|---|
# | `SSA_TUTORIAL_SEGFORMER` | `nvidia/segformer-b0-finetuned-ade-512-512` | the SegFormer to start from (hub id or folder) |
# | `SSA_TUTORIAL_DATA` | `../shared/data/camvid` when present, else generated scenes | a CamVid-layout folder |
# | `SSA_TUTORIAL_ITERATIONS` | `300` | training iterations for each model |
# | `SSA_TUTORIAL_OUTPUT` | `outputs/tutorial` | where runs are written (a new folder each time) |
#
# The notebook version, `docs/tutorials/fine_tuning.ipynb`, is generated from this script with jupytext
# ([download it](../fine_tuning.ipynb)).

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from transformers import pipeline

from ssa_hf import SSAForSemanticSegmentation
from ssa_hf.data import load_split
from ssa_hf.demo import CAMVID_CLASSES
from ssa_hf.evaluation import predict_label_map
from ssa_hf.synthetic import CLASSES as SCENE_CLASSES
from ssa_hf.synthetic import generate
from ssa_hf.training import Recipe, train
from ssa_hf.visualization import overlay_with_legend

SEGFORMER = os.environ.get("SSA_TUTORIAL_SEGFORMER", "nvidia/segformer-b0-finetuned-ade-512-512")
ITERATIONS = int(os.environ.get("SSA_TUTORIAL_ITERATIONS", "300"))
EVAL_LIMIT = int(os.environ["SSA_TUTORIAL_EVAL_LIMIT"]) if "SSA_TUTORIAL_EVAL_LIMIT" in os.environ else None
OUTPUT = Path(os.environ.get("SSA_TUTORIAL_OUTPUT", "outputs/tutorial")) / time.strftime("run-%Y%m%d-%H%M%S")
CAMVID = Path(os.environ.get("SSA_TUTORIAL_DATA", "../shared/data/camvid"))

# %% [markdown]
# ## 1. The data
#
# CamVid (11 classes, raw label 11 is "void") in its usual layout: `train/images`, `train/labels`, `val/...`. Without
# it, the tutorial generates the small street-scene dataset of `make demo` (six classes that differ in colour and
# texture), so it runs anywhere.

# %%
if (CAMVID / "train" / "labels").is_dir():
    data, class_names, convention = CAMVID, CAMVID_CLASSES, "camvid"
    crop, scale = (160, 160), (240, 180)  # half resolution, to fit a CPU budget
else:
    data, class_names, convention = generate(OUTPUT / "scenes"), SCENE_CLASSES, None
    crop, scale = (128, 128), (160, 128)
print(f"data: {data} ({len(class_names)} classes: {', '.join(class_names)})")

# %% [markdown]
# ## 2. SSA on a SegFormer
#
# `from_segformer` copies the SegFormer's encoder, decoder and 1x1 classifier; the classifier's weights become SSA's
# *fixed prototypes*, and the SSA layers (prototype fusion, position basis, teacher) start fresh. Here the class set
# changes (ADE20K's 150 classes to CamVid's 11), so the classifier is re-initialised and the log says so.

# %%
id2label = dict(enumerate(class_names))
model = SSAForSemanticSegmentation.from_segformer(SEGFORMER, id2label=id2label)
print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
      f"{model.config.num_labels} classes, encoder {type(model.encoder).__name__}")

# %% [markdown]
# ## 3. Fine-tune SSA and the plain SegFormer the same way
#
# A `Recipe` holds everything that decides a run: crop, scales, iterations, batch, the AdamW schedule with mmseg's
# learning-rate multipliers. `train` builds the model from `recipe.encoder` (our SegFormer), trains it with
# `accelerate`, evaluates on the validation split, and writes the run folder: `run.json`, `history.json`,
# checkpoints, and `final/` with the model and its image processor. `baseline=True` trains the plain SegFormer
# with the same recipe, data order and seed.

# %%
recipe = Recipe(
    name="tutorial", encoder=SEGFORMER, convention=convention, num_labels=len(class_names), id2label=id2label,
    crop_size=crop, scale=scale, eval_scale=scale, ratio_range=(0.75, 1.5), iterations=ITERATIONS, batch_size=8,
    lr=3e-4, warmup_iters=max(1, ITERATIONS // 10), eval_every=ITERATIONS, save_every=ITERATIONS,
)
results = {}
for label, baseline in (("SSA", False), ("SegFormer", True)):
    results[label] = train(recipe, str(data), OUTPUT / label.lower(), baseline=baseline, cpu=True,
                           eval_limit=EVAL_LIMIT, num_workers=0)

# %% [markdown]
# ## 4. Compare
#
# Both models were evaluated on the validation split through the image processor saved in `final/`: the same
# preprocessing and post-processing `pipeline("image-segmentation")` applies.

# %%
print("| model | mIoU | mAcc | aAcc |\n|---|---|---|---|")
for label, result in results.items():
    metrics = result["metrics"]
    print(f"| {label} | {100 * metrics['mean_iou']:.2f} | {100 * metrics['mean_accuracy']:.2f} | "
          f"{100 * metrics['overall_accuracy']:.2f} |")

ious = {label: np.nan_to_num(np.array(result["metrics"]["per_category_iou"], dtype=float))
        for label, result in results.items()}
positions = np.arange(len(class_names))
figure, axis = plt.subplots(figsize=(9, 3.5))
for offset, (label, values) in zip((-0.2, 0.2), ious.items()):
    axis.bar(positions + offset, 100 * values, width=0.4, label=label)
axis.set_xticks(positions, class_names, rotation=30, ha="right")
axis.set_ylabel("validation IoU (%)")
axis.set_title(f"Per-class IoU after {ITERATIONS} iterations")
axis.legend()
figure.tight_layout()
figure.savefig(OUTPUT / "per_class_iou.png", dpi=110)  # also kept beside the runs when run as a script
plt.show()

# %% [markdown]
# ## 5. Look at the predictions
#
# The overlay blends the class colours into the image and lists the classes present with their pixel share.

# %%
processor = results["SSA"]["processor"]
validation = load_split(str(data), "validation")
image = validation[0]["image"].convert("RGB")
figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for axis, label in zip(axes, results):
    label_map = predict_label_map(results[label]["model"].eval(), processor, image).numpy()
    axis.imshow(overlay_with_legend(image, label_map, id2label))
    axis.set_title(label)
    axis.axis("off")
figure.tight_layout()
figure.savefig(OUTPUT / "predictions.png", dpi=110)
plt.show()

# %% [markdown]
# ## 6. A hub-ready folder
#
# `final/` holds safetensors weights, the config, the remote code and the image processor. It loads with
# `pipeline` here, and with `trust_remote_code=True` where `ssa_hf` is not installed. `ssa-seg card` writes its
# model card, `ssa-seg publish` uploads it (after a parity check), and `ssa-seg space` writes a Gradio demo for it.

# %%
final = OUTPUT / "ssa" / "final"
segmenter = pipeline("image-segmentation", model=str(final))
found = segmenter(image)
print(f"{final}: pipeline found {[segment['label'] for segment in found]}")
print(f"next: ssa-seg publish {final} --repo-id <you>/ssa-b0-camvid --dry-run upload/")
