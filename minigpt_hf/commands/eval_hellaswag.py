"""HellaSwag accuracy of any causal LM, as in build-nanogpt: acc = lowest summed ending loss, acc_norm = lowest mean.

    minigpt eval-hellaswag --model gpt2 --data hellaswag_val.jsonl --output hellaswag.json
    accelerate launch -m minigpt_hf eval-hellaswag --model out/gpt2-124m/checkpoints/step_000953 --trust_remote_code

Without --data the official validation file is downloaded once to --cache_dir (needs the network). Prints the metrics
as JSON (and writes them to --output) on the main process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import ArgumentParser, add_model_args, model_source
from . import command


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="minigpt eval-hellaswag", description=__doc__)
    add_model_args(parser)
    parser.add_argument("--tokenizer", default=None, type=model_source, help="tokenizer folder or hub id (default: --model)")
    parser.add_argument(
        "--data", type=Path, default=None, help="HellaSwag .jsonl or datasets folder (default: download val)"
    )
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help="download folder (default: ~/.cache/minigpt_hf/hellaswag)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be at least 1")
    return args


@command
def main(argv=None) -> int:
    args = parse_args(argv)
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from ..evaluation import evaluate_hellaswag, finish, load_hellaswag, load_model
    from ..evaluation.hellaswag import DEFAULT_CACHE_DIR, METRIC_DEFINITIONS, download_hellaswag

    accelerator = Accelerator()
    with accelerator.main_process_first():  # only the main process downloads
        data = args.data or download_hellaswag(args.cache_dir or DEFAULT_CACHE_DIR)
    examples = load_hellaswag(data)
    model = load_model(args.model, args.dtype, args.trust_remote_code, args.device or accelerator.device, args.verify)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    metrics = evaluate_hellaswag(model, tokenizer, examples, accelerator=accelerator, limit=args.limit)
    result = {"model": args.model, "data": str(data), **metrics, "num_processes": accelerator.num_processes}
    result["definitions"] = METRIC_DEFINITIONS
    finish(accelerator, result, args.output)
    return 0

