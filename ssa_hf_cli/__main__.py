"""`python -m ssa_hf_cli ...`, the same as `ssa-seg ...`."""

import sys

from . import main

sys.exit(main())
