"""Evaluation that works on any ``AutoModelForCausalLM``: HellaSwag accuracy and validation loss.

Both evaluations shard their work over the processes of an ``accelerate`` launch and gather the per-example results,
so the metrics of a multi-process run equal those of a single process. :func:`load_model` and :func:`parse_dtype` are the
shared pieces of the commands.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..arguments import DTYPES, could_be_hub_id
from .hellaswag import evaluate_hellaswag, load_hellaswag, score_example
from .loss import context_length, evaluate_loss, load_tokens, make_windows, token_losses


__all__ = [
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
    if local.exists() or not could_be_hub_id(str(name)):
        verify_folder(local, contents=True if verify else "once")
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except OSError as err:
        if local.exists():
            raise
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") else ""
        raise FileNotFoundError(f"{name}: no such model folder, and no model of that name could be loaded from the "
                                f"Hub{offline}; pass a checkpoint folder or a Hub id such as gpt2") from err
    except ValueError:
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
