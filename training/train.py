"""Train SSA (or the plain SegFormer baseline): the same as `ssa-seg train`, as a script for `accelerate launch`.

    python training/train.py --recipe camvid --data ../shared/data/camvid --output runs/camvid
    accelerate launch --multi_gpu --num_processes 2 training/train.py --recipe ade20k --data ... --output ...

The training library is `ssa_hf.training`; `ssa-seg train --help` lists the flags.
"""

import sys

from ssa_hf_cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
