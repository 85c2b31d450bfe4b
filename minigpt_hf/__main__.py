"""``python -m minigpt_hf <command> ...`` (the same as the ``minigpt`` console command)."""

import sys

from minigpt_hf.commands import main

if __name__ == "__main__":
    sys.exit(main())
