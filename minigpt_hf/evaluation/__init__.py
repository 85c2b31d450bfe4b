"""Evaluation that works on any ``AutoModelForCausalLM``: HellaSwag accuracy and validation loss.

Both evaluations shard their work over the processes of an ``accelerate`` launch and gather the per-example results,
so the metrics of a multi-process run equal those of a single process. :func:`load_model`, :func:`parse_dtype` and
:func:`add_model_args` are the shared pieces of the commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .hellaswag import evaluate_hellaswag, load_hellaswag, score_example
from .loss import context_length, evaluate_loss, load_tokens, make_windows, token_losses

DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16",
          "float16": "float16", "auto": "auto"}

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
    "parse_dtype",
    "score_example",
    "token_losses",
]


def parse_dtype(name: str):
    """A weight dtype by name (fp32, bf16, fp16 or torch's float32, bfloat16, float16; or auto) -> torch.dtype
    ('auto' stays the string). The one table of dtype names in the package."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: use one of fp32, bf16, fp16, auto")
    return DTYPES[name] if name == "auto" else getattr(torch, DTYPES[name])


def add_model_args(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """Add the model flags the commands share: the model (``--model`` or positional), ``--trust_remote_code``,
    ``--dtype`` and ``--device``."""
    help_model = "checkpoint folder or hub id, loaded with AutoModelForCausalLM.from_pretrained"
    if positional:
        parser.add_argument("model", metavar="CHECKPOINT", help=help_model)
    else:
        parser.add_argument("--model", required=True, help=help_model)
    parser.add_argument("--trust_remote_code", action="store_true", help="allow modeling code saved with the model")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="weight dtype (default: fp32)")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cuda if available, else cpu)")
    parser.add_argument("--verify", action="store_true",
                        help="check every file's sha256 (default: sizes always, contents the first time a folder is "
                             "read as it is now)")


def load_model(name: str, dtype: str = "fp32", trust_remote_code: bool = False, device=None, verify: bool = False):
    """``AutoModelForCausalLM.from_pretrained(name)`` in eval mode, in ``dtype``, moved to ``device`` if given.

    A local folder is checked first (:func:`minigpt_hf.checkpoint.verify_folder`: an unfinished, truncated or
    damaged checkpoint is named as such): every file's size, and its sha256 with ``verify`` or if the folder was
    not verified before as it is now; weights that cannot be read are a ValueError naming the folder.
    """
    from transformers import AutoModelForCausalLM

    from ..checkpoint import verify_folder

    torch_dtype = parse_dtype(dtype)
    local = Path(name).expanduser()
    if local.exists() or str(name).startswith((".", "/", "~")):
        verify_folder(local, contents=True if verify else "once")
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        raise
    except Exception as err:  # safetensors' SafetensorError and friends: a damaged weight file
        raise ValueError(f"{name}: cannot read the weights ({type(err).__name__}: {err}); the file is damaged, "
                         "use another checkpoint") from None
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
