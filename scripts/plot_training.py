"""The notes' training figures as PNG from a run's TensorBoard logs: Figure 1 (train/val loss), Figure 2 (learning
rate with warmup), Figure 7 (HellaSwag acc_norm against GPT-2 124M and chance).

    python scripts/plot_training.py runs/gpt2-124m --out figures

Event files are searched recursively under RUN_DIR; a figure whose scalars were never logged is skipped with a note.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minigpt_hf.plotting import plot_training


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="folder holding the run's event files")
    parser.add_argument("--out", type=Path, default=None, help="where the PNGs go (default: RUN_DIR/figures)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        written = plot_training(args.run_dir, args.out)
    except (OSError, ValueError) as err:
        print(f"plot_training: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
