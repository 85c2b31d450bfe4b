"""Shim: the same as `minigpt export` (so that `python scripts/export_gpt2.py` and `accelerate launch scripts/export_gpt2.py` work)."""

import sys

from minigpt_hf.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
