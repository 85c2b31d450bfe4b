"""The notes' training figures as PNG from a run's TensorBoard logs: Figure 1 (train/val loss), Figure 2 (learning
rate with warmup), Figure 7 (HellaSwag acc_norm against GPT-2 124M and chance).

    minigpt plot out/gpt2-124m --out figures

Event files are searched recursively under RUN_DIR; a figure whose scalars were never logged is skipped with a note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import ArgumentParser
from . import command


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="minigpt plot", description=__doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="folder holding the run's event files")
    parser.add_argument("--out", type=Path, default=None, help="where the PNGs go (default: RUN_DIR/figures)")
    return parser.parse_args(argv)


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    from ..plotting import plot_training

    written = plot_training(args.run_dir, args.out)
    for path in written.values():
        print(f"wrote {path}")
    return 0

