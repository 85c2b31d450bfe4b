"""Mean validation loss, perplexity and bits per byte (bpb) of any causal LM over uint16 token shards.

    minigpt eval-loss --model out/gpt2-124m/checkpoints/step_000953 --data data/fineweb-edu --max_tokens 1000000
    accelerate launch -m minigpt_hf eval-loss --model gpt2 --data data/fineweb-edu/fineweb-edu_val_000000.npy

Windows of T = min(--seq_len, the model's max positions) tokens; prints the result as JSON (and writes --output).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import ArgumentParser, add_model_args
from . import command


def parse_args(argv=None) -> argparse.Namespace:
    
    parser = ArgumentParser(prog="minigpt eval-loss", description=__doc__)
    add_model_args(parser)
    parser.add_argument("--data", type=Path, required=True, help="a .npy token shard, or a data folder of shards")
    parser.add_argument("--split", default="val", help="which shards of a data folder (default: val)")
    parser.add_argument("--max_tokens", type=int, default=None, help="use only the first N tokens")
    parser.add_argument("--seq_len", type=int, default=None, help="window length (default: the model's maximum)")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass (default: 8)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    for name in ("batch_size", "seq_len", "max_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: must be at least 1")
    return args


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    from accelerate import Accelerator

    from ..evaluation import evaluate_loss, finish, load_model, load_tokens

    accelerator = Accelerator()
    tokens = load_tokens(args.data, args.split, args.max_tokens)
    model = load_model(args.model, args.dtype, args.trust_remote_code, args.device or accelerator.device, args.verify)
    metrics = evaluate_loss(model, tokens, args.seq_len, args.batch_size, accelerator=accelerator)
    result = {"model": args.model, "data": str(args.data), **metrics, "num_processes": accelerator.num_processes}
    finish(accelerator, result, args.output)
    return 0

