"""Shim: the same as `minigpt plot` (so that `python scripts/plot_training.py` and `accelerate launch scripts/plot_training.py` work)."""

import sys

from minigpt_hf.commands.plot import main

if __name__ == "__main__":
    sys.exit(main())
