"""Evaluation that works on any ``AutoModelForCausalLM``: HellaSwag accuracy and validation loss.

Both evaluations shard their work over the processes of an ``accelerate`` launch and gather the per-example results,
so the metrics of a multi-process run equal those of a single process. :func:`load_model` and :func:`add_model_args`
are the shared pieces of the command lines in ``scripts/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .hellaswag import evaluate_hellaswag, load_hellaswag, score_example
from .loss import context_length, evaluate_loss, load_tokens, make_windows, token_losses

DTYPES = ("float32", "bfloat16", "float16", "auto")

__all__ = [
    "add_model_args",
    "finish",
    "context_length",
    "evaluate_hellaswag",
    "evaluate_loss",
    "load_hellaswag",
    "load_model",
    "load_tokens",
    "make_windows",
    "score_example",
    "token_losses",
]


def add_model_args(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """Add the model flags the scripts share: the model (``--model`` or positional), ``--trust_remote_code``,
    ``--dtype`` and ``--device``."""
    help_model = "checkpoint folder or hub id, loaded with AutoModelForCausalLM.from_pretrained"
    if positional:
        parser.add_argument("model", metavar="CHECKPOINT", help=help_model)
    else:
        parser.add_argument("--model", required=True, help=help_model)
    parser.add_argument("--trust_remote_code", action="store_true", help="allow modeling code saved with the model")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weight dtype (default: float32)")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cuda if available, else cpu)")


def load_model(name: str, dtype: str = "float32", trust_remote_code: bool = False, device=None):
    """``AutoModelForCausalLM.from_pretrained(name)`` in eval mode, in ``dtype``, moved to ``device`` if given."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if str(name).startswith((".", "/", "~")) and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(f"{name}: no such model folder; pass a checkpoint folder or a hub id")
    model = AutoModelForCausalLM.from_pretrained(
        name, dtype=dtype if dtype == "auto" else getattr(torch, dtype), trust_remote_code=trust_remote_code
    )
    if device is not None:
        model.to(device)
    return model.eval()


def finish(accelerator, result: dict, output: Path | None = None) -> None:
    """End an evaluation script: the main process prints ``result`` as JSON (and writes it to ``output``); then all
    processes tear the process group down together, since gloo can abort a rank left running at interpreter exit."""
    import json

    if accelerator.is_main_process:
        text = json.dumps(result, indent=2)
        print(text)
        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
