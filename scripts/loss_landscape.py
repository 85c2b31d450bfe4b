"""Shim: the same as `minigpt landscape` (so that `python scripts/loss_landscape.py` and `accelerate launch scripts/loss_landscape.py` work)."""

import sys

from minigpt_hf.commands.landscape import main

if __name__ == "__main__":
    sys.exit(main())
