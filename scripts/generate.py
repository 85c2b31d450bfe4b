"""Shim: the same as `minigpt generate` (so that `python scripts/generate.py` and `accelerate launch scripts/generate.py` work)."""

import sys

from minigpt_hf.commands.generate import main

if __name__ == "__main__":
    sys.exit(main())
