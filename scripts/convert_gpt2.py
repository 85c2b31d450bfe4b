"""Shim: the same as `minigpt convert` (so that `python scripts/convert_gpt2.py` and `accelerate launch scripts/convert_gpt2.py` work)."""

import sys

from minigpt_hf.commands.convert import main

if __name__ == "__main__":
    sys.exit(main())
