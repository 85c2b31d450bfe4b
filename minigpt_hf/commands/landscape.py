"""The notes' Figure 6: loss landscape around a checkpoint along two filter-normalised random directions
(Li et al., 2018; biases and LayerNorm parameters stay fixed), on one fixed validation batch.

    minigpt landscape out/gpt2-124m/checkpoints/step_000953 --data data/fineweb-edu --grid 21 --span 1.0
    minigpt landscape out/gpt2-124m/checkpoints/step_000953 --text some.txt --grid 11 --batch_size 4 --seq_len 256

Writes landscape.npz (alphas, betas, losses), landscape_contour.png and landscape_surface.png to --out and prints a
JSON summary. --grid must be odd so the trained weights (alpha = beta = 0) are on the grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..arguments import ArgumentParser, add_model_args, model_source
from . import command


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="minigpt landscape", description=__doc__)
    add_model_args(parser, positional=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a .npy token shard, or a data folder of shards")
    source.add_argument("--text", type=Path, help="a UTF-8 text file, tokenized with --tokenizer")
    parser.add_argument("--split", default="val", help="which shards of a data folder (default: val)")
    parser.add_argument("--tokenizer", default=None, type=model_source, help="tokenizer for --text (default: CHECKPOINT)")
    parser.add_argument("--grid", type=int, default=21, help="points per axis, odd (default: 21)")
    parser.add_argument("--span", type=float, default=1.0, help="alpha and beta run over [-span, span] (default: 1)")
    parser.add_argument("--batch_size", type=int, default=8, help="windows in the fixed batch (default: 8)")
    parser.add_argument("--seq_len", type=int, default=None, help="window length (default: the model's maximum)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the two random directions (default: 0)")
    parser.add_argument("--out", type=Path, default=Path("out/landscape"), help="output folder (default: %(default)s)")
    return parser.parse_args(argv)


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from ..evaluation import context_length, load_model, load_tokens, make_windows
    from ..landscape import batch_loss, loss_landscape, plot_landscape

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, args.dtype, args.trust_remote_code, device, args.verify)
    seq_len = context_length(model, args.seq_len)
    if args.data:
        tokens = load_tokens(args.data, args.split, max_tokens=args.batch_size * seq_len + 1)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        tokens = np.array(tokenizer(args.text.read_text(encoding="utf-8"), verbose=False)["input_ids"])
    n_windows = min(args.batch_size, (len(tokens) - 1) // seq_len)
    if n_windows < 1:
        raise ValueError(f"need at least {seq_len + 1} tokens for one window of {seq_len}, got {len(tokens)}")
    windows = make_windows(tokens, seq_len, range(n_windows))
    final_loss = batch_loss(model, windows)
    result = loss_landscape(model, windows, args.grid, args.span, args.seed)
    paths = plot_landscape(result, final_loss, args.out)
    summary = {
        "checkpoint": args.model,
        "final_loss": final_loss,
        "min_loss": float(result["losses"].min()),
        "max_loss": float(result["losses"].max()),
        "grid": args.grid,
        "span": args.span,
        "batch": [n_windows, seq_len],
        "files": [str(p) for p in paths.values()],
    }
    print(json.dumps(summary, indent=2))
    return 0

