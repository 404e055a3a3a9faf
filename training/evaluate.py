"""Evaluate a saved segmentation model on a dataset split the way papers report it: whole image or sliding window,
single scale or multi-scale with flip; prints a per-class table and writes JSON.

    python training/evaluate.py --model runs/camvid/final --data ../shared/data/camvid --convention camvid
    python training/evaluate.py --model ... --data ADEChallengeData2016 --convention ade20k --scale 2048 512 \
        --mode slide --crop 512 512 --stride 341 341 --scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssa_hf.data import CONVENTIONS  # noqa: E402
from ssa_hf.evaluation import StreamingMeanIoU, predict_probabilities  # noqa: E402
from ssa_hf.transforms import EvalTransform  # noqa: E402
from training.train import SegmentationDataset, load_split  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a save_pretrained folder or hub id")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--convention", required=True, choices=sorted(CONVENTIONS))
    parser.add_argument("--scale", type=int, nargs=2, default=(2048, 512), help="keep-ratio test scale")
    parser.add_argument("--size-divisor", type=int)
    parser.add_argument("--mode", default="whole", choices=["whole", "slide"])
    parser.add_argument("--crop", type=int, nargs=2, default=(512, 512), help="sliding window (height, width)")
    parser.add_argument("--stride", type=int, nargs=2, default=(341, 341))
    parser.add_argument("--scales", type=float, nargs="+", default=(1.0,))
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--output", type=Path, help="JSON file (default: <model>/eval_<split>.json when local)")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm
    from transformers import AutoModelForSemanticSegmentation

    import ssa_hf  # noqa: F401  (registers SSA with the Auto classes)

    model = AutoModelForSemanticSegmentation.from_pretrained(args.model, trust_remote_code=True).eval()
    convention = CONVENTIONS[args.convention]
    if model.config.num_labels != convention.num_labels:
        raise SystemExit(f"the model has {model.config.num_labels} classes, the {args.convention} convention "
                         f"{convention.num_labels}")
    rows = load_split(args.data, args.split)
    if args.limit:
        rows = rows.select(range(min(args.limit, len(rows))))
    dataset = SegmentationDataset(rows, convention, EvalTransform(scale=tuple(args.scale),
                                                                  size_divisor=args.size_divisor))
    metric = StreamingMeanIoU(convention.num_labels, ignore_index=convention.ignore_index)
    for index in tqdm(range(len(dataset)), desc="evaluating"):
        item = dataset[index]
        probabilities = predict_probabilities(model, item["pixel_values"][None], output_size=item["labels"].shape,
                                              mode=args.mode, crop_size=tuple(args.crop), stride=tuple(args.stride),
                                              scales=tuple(args.scales), flip=args.flip)
        metric.update(probabilities.argmax(1)[0], item["labels"])
    result = metric.compute()
    names = [model.config.id2label[i] for i in range(convention.num_labels)]
    width = max(len(n) for n in names)
    print(f"| {'class'.ljust(width)} | IoU   | Acc   |\n|{'-' * (width + 2)}|-------|-------|")
    for name, iou, acc in zip(names, result["per_category_iou"], result["per_category_accuracy"]):
        print(f"| {name.ljust(width)} | {100 * iou:5.2f} | {100 * acc:5.2f} |" if not np.isnan(iou) else
              f"| {name.ljust(width)} |   -   |   -   |")
    print(f"mIoU {100 * result['mean_iou']:.2f}  mAcc {100 * result['mean_accuracy']:.2f}  "
          f"aAcc {100 * result['overall_accuracy']:.2f}  ({len(dataset)} images, {args.mode}, scales "
          f"{list(args.scales)}{', flip' if args.flip else ''})")
    report = {"model": args.model, "data": args.data, "split": args.split, "convention": args.convention,
              "protocol": {"mode": args.mode, "scale": list(args.scale), "crop": list(args.crop),
                           "stride": list(args.stride), "scales": list(args.scales), "flip": args.flip,
                           "size_divisor": args.size_divisor},
              "images": len(dataset), **{k: v for k, v in result.items()},
              "per_category": {n: {"iou": i, "accuracy": a} for n, i, a in
                               zip(names, result["per_category_iou"], result["per_category_accuracy"])}}
    output = args.output or (Path(args.model) / f"eval_{args.split}.json" if Path(args.model).is_dir() else None)
    if output is not None:
        Path(output).write_text(json.dumps(_nan_to_none(report), indent=1))
        print(f"written {output}")
    return report


def _nan_to_none(value):
    """JSON has no NaN: classes absent from the split are written as null."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


if __name__ == "__main__":
    main()
