"""Evaluate a saved segmentation model on a dataset split the way papers report it: whole image or sliding window,
single scale or multi-scale with flip; prints a per-class table and writes JSON. The same as `ssa-seg evaluate`.

    python training/evaluate.py --model runs/camvid/final --data ../shared/data/camvid --convention camvid
    python training/evaluate.py --model ... --data ADEChallengeData2016 --convention ade20k --scale 2048 512 \
        --mode slide --crop 512 512 --stride 341 341 --scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssa_hf.cli import build_parser, cmd_evaluate  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(["evaluate", *(sys.argv[1:] if argv is None else argv)])
    return cmd_evaluate(args)


if __name__ == "__main__":
    main()
