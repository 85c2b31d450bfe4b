"""Shim: the same as `minigpt prepare-data` (so that `python scripts/prepare_data.py` and `accelerate launch scripts/prepare_data.py` work)."""

import sys

from minigpt_hf.commands.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
