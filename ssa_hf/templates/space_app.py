"""Gradio demo of an SSA-Seg semantic segmentation model, written by `ssa-seg space`.

Upload an image (or pick an example): the model segments it through `pipeline("image-segmentation")`, exactly as
users of the model call it, and the app shows the classes as a colour overlay, a legend and a table of the share of
the image each class covers. Run it with `python app.py` (after `pip install -r requirements.txt gradio`); on a
Hugging Face Space it starts by itself.
"""

import html
import os
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image
from transformers import pipeline
from transformers.utils import logging as transformers_logging

LOCAL_MODEL = __LOCAL_MODEL__  # the model is a folder named relative to this file, not a hub id
MODEL = os.environ.get("SSA_SPACE_MODEL", __MODEL__)
if LOCAL_MODEL and "SSA_SPACE_MODEL" not in os.environ:
    MODEL = str((Path(__file__).parent / MODEL).resolve())
# True (the default of `ssa-seg space`): the model's own code, saved in its repository, defines the model, and no
# package is needed. False when the Space was written with `ssa-seg space --requirement SPEC`: the `ssa_hf` package
# that requirements.txt installs defines it.
TRUST_REMOTE_CODE = __TRUST_REMOTE_CODE__
TITLE = __TITLE__
EXAMPLES = sorted(str(path) for path in (Path(__file__).parent / "examples").glob("*") if path.is_file())
ALPHA = 0.5  # weight of the class colours in the overlay

if not TRUST_REMOTE_CODE:
    import ssa_hf  # noqa: F401  (registers the SSA model with transformers' Auto classes)

# pipeline logs "not supported for image-segmentation" for any model outside transformers' own tables; it runs.
verbosity = transformers_logging.get_verbosity()
transformers_logging.set_verbosity(transformers_logging.CRITICAL)  # that message is logged as an error
segmenter = pipeline("image-segmentation", model=MODEL, trust_remote_code=TRUST_REMOTE_CODE)
transformers_logging.set_verbosity(verbosity)
ID2LABEL = {int(index): name for index, name in segmenter.model.config.id2label.items()}


def palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 colours: the PASCAL VOC bit-interleaved palette from its second entry, as `ssa-seg predict`."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(min(num_classes, 255)):
        value, red, green, blue = index + 1, 0, 0, 0
        for shift in range(8):
            red |= ((value >> 0) & 1) << (7 - shift)
            green |= ((value >> 1) & 1) << (7 - shift)
            blue |= ((value >> 2) & 1) << (7 - shift)
            value >>= 3
        colours[index] = (red, green, blue)
    if num_classes > 255:
        colours[255:] = np.random.default_rng(0).integers(0, 256, (num_classes - 255, 3), dtype=np.uint8)
    return colours


COLOURS = palette(len(ID2LABEL))
MODEL_LINK = f"`{Path(MODEL).name}`" if Path(MODEL).is_dir() else f"[{MODEL}](https://huggingface.co/{MODEL})"
LABEL2ID = {name: index for index, name in ID2LABEL.items()}


def segment(image: Image.Image):
    """The overlay, the legend (HTML) and the per-class share table of one image."""
    if image is None:
        raise gr.Error("Upload an image or pick an example first.")
    image = image.convert("RGB")
    segments = segmenter(image)  # one {"label", "mask"} per class present, masks at the image's size
    rgb = np.asarray(image, dtype=np.float32)
    colour_map = rgb.copy()
    shares = []
    for segment_ in segments:
        mask = np.asarray(segment_["mask"]) > 0
        colour_map[mask] = COLOURS[LABEL2ID[segment_["label"]]]
        shares.append((segment_["label"], float(mask.mean())))
    overlay = Image.fromarray(((1 - ALPHA) * rgb + ALPHA * colour_map).round().clip(0, 255).astype(np.uint8))
    shares.sort(key=lambda item: -item[1])
    legend = "".join(
        f'<span class="ssa-legend-entry" style="display:inline-block;margin:2px 10px 2px 0">'
        f'<span style="display:inline-block;width:14px;height:14px;margin-right:5px;vertical-align:middle;'
        f'border:1px solid #000;background:rgb{tuple(int(c) for c in COLOURS[LABEL2ID[label]])}"></span>'
        f"{html.escape(label)}</span>"
        for label, _ in shares
    )
    table = [[label, round(100 * share, 2)] for label, share in shares]
    return overlay, f'<div id="ssa-legend">{legend}</div>', table


demo = gr.Interface(
    fn=segment,
    inputs=gr.Image(type="pil", label="image"),
    outputs=[
        gr.Image(type="pil", label="classes"),
        gr.HTML(label="legend"),
        gr.Dataframe(headers=["class", "share of the image (%)"], label="per-class share", elem_id="ssa-shares"),
    ],
    examples=[[path] for path in EXAMPLES] or None,
    cache_examples=False,
    title=TITLE,
    description=f"Semantic segmentation with {MODEL_LINK}, an SSA-Seg model ({len(ID2LABEL)} classes). "
                f"Upload an image or pick an example.",
    api_name="segment",
    flagging_mode="never",
)

if __name__ == "__main__":
    demo.launch()
