"""Shim: the same as `minigpt train` (so that `python scripts/train.py` and `accelerate launch scripts/train.py` work)."""

import sys

from minigpt_hf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
