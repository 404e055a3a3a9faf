"""A small street-scene-like dataset generated on the spot (no download): the embedded default of `make demo`.

Six classes that differ in colour and texture, with per-image variation of both and a scene layout (sky above a
random horizon, buildings and trees standing on it, road and grass below, a water patch): enough structure that
context helps and texture alone is not trivially separable. Every image also has its own colour cast (lighting and
white balance, up to +-45% per channel), so a class's colour varies far more between images than within one: the
variation that SSA's prototypes, adapted to each image, are made for (docs/method.md), and the setting in which the
demo's SSA-SegFormer gap is larger than its seed-to-seed spread (docs/benchmarks.md, "The demo over seeds"). Written in the CamVid layout
(`<split>/images/*.png`, `<split>/labels/*.png`), so `ssa_hf.data.load_folder` reads it.
"""

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["sky", "building", "tree", "road", "grass", "water"]
PALETTE = [(70, 130, 180), (150, 80, 60), (30, 100, 40), (110, 110, 110), (90, 170, 60), (40, 90, 160)]
COLOUR_CAST = 0.45  # the largest per-image change of each colour channel


def _texture(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.array(PALETTE[CLASSES.index(kind)], np.float32) * rng.uniform(0.8, 1.2, 3)
    noise = rng.normal(0, 1, (height, width)).astype(np.float32)
    if kind == "sky":
        pattern = 25 * (rows / height) + 6 * noise
    elif kind == "building":  # bricks: horizontal courses with staggered joints
        course = rng.integers(4, 7)
        stagger = (rows // course % 2) * course
        pattern = -40 * ((rows % course == 0) | ((cols + stagger) % (2 * course) == 0)) + 8 * noise
    elif kind == "tree":
        pattern = 30 * np.sin(cols / rng.uniform(1.5, 3)) * np.cos(rows / rng.uniform(1.5, 3)) + 20 * noise
    elif kind == "road":
        pattern = 5 * noise
    elif kind == "grass":
        pattern = 30 * np.abs(noise) - 15
    else:  # water: soft waves
        pattern = 20 * np.sin(rows / rng.uniform(1.5, 2.5) + np.sin(cols / 7)) + 4 * noise
    return np.clip(base[None, None] + pattern[..., None], 0, 255)


def make_scene(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB image uint8 (H, W, 3), label map uint8 (H, W)) pair."""
    labels = np.zeros((height, width), np.uint8)  # sky
    rows, cols = np.mgrid[0:height, 0:width]
    horizon = int(height * rng.uniform(0.35, 0.6))
    labels[horizon:] = CLASSES.index("grass")
    road_left, road_right = sorted(rng.integers(0, width, 2))
    slope = rng.uniform(-0.6, 0.6)
    road = (rows >= horizon) & (cols >= road_left + slope * (rows - horizon)) & (cols <= road_right + 1.5 * (rows - horizon) * abs(slope) + 8)
    labels[road] = CLASSES.index("road")
    if rng.random() < 0.7:  # a water patch in the grass
        cy, cx = rng.integers(horizon + 4, height), rng.integers(0, width)
        ry, rx = rng.integers(4, height // 5 + 5), rng.integers(8, width // 3 + 9)
        water = (((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1) & (labels == CLASSES.index("grass"))
        labels[water] = CLASSES.index("water")
    for _ in range(rng.integers(1, 4)):  # buildings standing on the horizon
        left, bottom = rng.integers(0, width), horizon + rng.integers(0, 4)
        top = max(0, bottom - rng.integers(height // 6, height // 2))
        labels[top:bottom, left : left + rng.integers(width // 8, width // 3)] = CLASSES.index("building")
    for _ in range(rng.integers(1, 5)):  # trees: round crowns near the horizon
        cy, cx, radius = horizon - rng.integers(0, height // 6), rng.integers(0, width), rng.integers(4, height // 7 + 5)
        labels[((rows - cy) ** 2 + (cols - cx) ** 2) < radius**2] = CLASSES.index("tree")
    image = np.zeros((height, width, 3), np.float32)
    for index, kind in enumerate(CLASSES):
        mask = labels == index
        if mask.any():
            image[mask] = _texture(kind, height, width, rng)[mask]
    if labels[road].size:  # lane marks on the road
        lane = road & ((rows // 6) % 2 == 0) & (np.abs(cols - (road_left + road_right) / 2 - slope * (rows - horizon) / 2) < 1.5)
        image[lane] = (230, 230, 210)
    image *= rng.uniform(0.75, 1.2) * rng.uniform(1 - COLOUR_CAST, 1 + COLOUR_CAST, 3)  # illumination, colour cast
    return np.clip(image, 0, 255).astype(np.uint8), labels


def generate(root: str | Path, num_train: int = 160, num_val: int = 40, size: tuple[int, int] = (128, 160),
             seed: int = 0) -> Path:
    """Write the dataset under `root` (idempotent: an existing complete dataset of the same settings is kept; one
    written by another version of this generator is written again). Returns `root`."""
    root = Path(root)
    marker = root / "COMPLETE"
    record = f"{num_train} train, {num_val} val, size {size}, seed {seed}, colour cast {COLOUR_CAST}\n"
    if marker.exists() and marker.read_text() == record:
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, labels = make_scene(*size, rng)
            Image.fromarray(image).save(root / split / "images" / f"{split}_{index:04d}.png")
            Image.fromarray(labels).save(root / split / "labels" / f"{split}_{index:04d}.png")
    marker.write_text(record)
    return root
