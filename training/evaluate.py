"""Evaluate a saved model on a dataset split: the same as `ssa-seg evaluate` (defaults from the model folder's image
processor; sliding window, multi-scale and flip on request).

    python training/evaluate.py --model runs/camvid/final --data ../shared/data/camvid
"""

import sys

from ssa_hf_cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
