"""Shim: the same as `minigpt eval-loss` (so that `python scripts/eval_loss.py` and `accelerate launch scripts/eval_loss.py` work)."""

import sys

from minigpt_hf.commands.eval_loss import main

if __name__ == "__main__":
    sys.exit(main())
