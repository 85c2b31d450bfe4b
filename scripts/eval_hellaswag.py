"""Shim: the same as `minigpt eval-hellaswag` (so that `python scripts/eval_hellaswag.py` and `accelerate launch scripts/eval_hellaswag.py` work)."""

import sys

from minigpt_hf.commands.eval_hellaswag import main

if __name__ == "__main__":
    sys.exit(main())
