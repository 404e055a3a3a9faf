"""Data loading speed: images per second of one worker (decode + label convention + training augmentation), on
CamVid from ../shared/data when present, else on synthetic 683x512 images. Writes benchmarks/results/bench_data.md.

    python benchmarks/bench_data.py [--images 60]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from results_io import write_results

from ssa_hf.data import CONVENTIONS, load_folder
from ssa_hf.transforms import TrainTransform

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    if SHARED.is_dir():
        dataset = load_folder(SHARED, split="train", check_sizes=False).select(range(args.images))
        for crop, scale in (((360, 480), (480, 360)), ((512, 512), (2048, 512))):
            transform = TrainTransform(crop_size=crop, scale=scale)
            start = time.perf_counter()
            for item in dataset:
                transform(item["image"].convert("RGB"), CONVENTIONS["camvid"].apply(np.array(item["annotation"])))
            rows.append((f"CamVid 480x360 -> crop {crop[1]}x{crop[0]} (scale {scale})",
                         args.images / (time.perf_counter() - start)))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (512, 683, 3), dtype=np.uint8))
    label = rng.integers(0, 150, (512, 683))
    transform = TrainTransform()
    start = time.perf_counter()
    for _ in range(args.images):
        transform(image, label)
    rows.append(("synthetic 683x512 (ADE20K size) -> crop 512x512, ADE recipe", args.images / (time.perf_counter() - start)))
    lines = ["| pipeline (one worker, 1 thread) | images / s |", "|---|---|"]
    lines += [f"| {name} | {rate:.1f} |" for name, rate in rows]
    table = "\n".join(lines) + f"\n\nCommand: python benchmarks/bench_data.py --images {args.images}"
    write_results("bench_data", table)


if __name__ == "__main__":
    main()
