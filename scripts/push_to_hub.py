"""Shim: the same as `minigpt push` (so that `python scripts/push_to_hub.py` and `accelerate launch scripts/push_to_hub.py` work)."""

import sys

from minigpt_hf.commands.push import main

if __name__ == "__main__":
    sys.exit(main())
