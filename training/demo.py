"""The main job (`make demo`): the same as `ssa-seg demo`.

    python training/demo.py                                # generated street scenes, about 5 minutes on 2 CPU cores
    python training/demo.py --data ../shared/data/camvid   # CamVid at half resolution, same budget
"""

import sys

from ssa_hf_cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
