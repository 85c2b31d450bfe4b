"""The model card (a Hub ``README.md``) of a checkpoint: metadata through ``huggingface_hub``'s ``ModelCardData``,
text from the template ``assets/templates/model_card.md``, facts from the folder and the run it came from."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .evaluation.hellaswag import GPT2_124M_HELLASWAG
from .checkpoint import redact

HOMEPAGE = "https://github.com/minigpt-hf/minigpt_hf"
TEMPLATE = Path(__file__).parent / "assets" / "templates" / "model_card.md"
TAGS = ["gpt2", "nanogpt", "minigpt", "causal-lm", "custom_code"]
HELLASWAG_DATASET = "Rowan/hellaswag"
HUB_DATASET_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "name" or "namespace/name"
TOKENS_PER_PARAMETER = 20  # Chinchilla's compute-optimal ratio (Hoffmann et al., 2022)
HYPERPARAMETERS = {  # what the card shows of a trainer checkpoint's trainer_state.json
    "train": ("total_batch_size", "max_steps", "max_lr", "min_lr", "weight_decay", "adam_beta1", "adam_beta2",
              "adam_epsilon", "grad_clip", "mixed_precision", "seed"),
    "data": ("micro_batch_size", "seq_len"),
    "state": ("world_size", "grad_accum_steps"),
}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _count_parameters(folder: Path) -> tuple[int, str] | None:
    """Parameters stored in the folder's safetensors files (tied weights once) and their dtype; None if none."""
    from safetensors import safe_open

    total, dtypes = 0, set()
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="np") as f:
            for name in f.keys():
                tensor = f.get_slice(name)
                total += math.prod(tensor.get_shape())
                dtypes.add(tensor.get_dtype())
    return (total, "/".join(sorted(dtypes))) if total else None


def _data_from_source(source: dict | None) -> tuple[list[str], str | None]:
    """Hub dataset ids and a description from a shard manifest's ``source`` (see ``minigpt_hf.data``). The Hub's
    ``datasets:`` metadata takes dataset ids only, so the embedded corpus and local files give none (the
    description, in the card's body, says what they were)."""
    if not source:
        return [], None
    if source.get("type") == "dataset":
        name = source["name"]
        config = f" ({source['config']})" if source.get("config") else ""
        ids = [name] if HUB_DATASET_ID.fullmatch(name) else []  # a local builder folder is no Hub id
        return ids, f"[{name}](https://huggingface.co/datasets/{name}){config}, split {source.get('split', 'train')}"
    if source.get("type") == "embedded":
        return [], f"the corpus embedded in minigpt_hf: {source['description']}"
    return [], "local files: " + ", ".join(map(str, source.get("paths", [])))


def _tokens(n: float) -> str:
    """``2.5B``, ``66M``, ``800k``: a token count at a glance."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2g}{unit}" if n < 10 * size else f"{n / size:.0f}{unit}"
    return f"{n:.0f}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _table(rows, head=("", "")) -> str:
    rows = [(k, v) for k, v in rows if v is not None]
    if not rows:
        return "Not recorded.\n"
    body = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows)
    return f"| {head[0]} | {head[1]} |\n|---|---|\n{body}\n"


def _eval_results(info: dict, dataset_id: str) -> list:
    from huggingface_hub import EvalResult

    results = []
    if info.get("val_loss") is not None:
        results.append(EvalResult(
            task_type="text-generation", dataset_type=dataset_id, dataset_name="held-out tokens of the training data",
            dataset_split="validation", metric_type="loss", metric_name="validation loss (cross-entropy, nats/token)",
            metric_value=round(float(info["val_loss"]), 4)))
    hellaswag = info.get("hellaswag") or {}
    if hellaswag.get("acc_norm") is not None:
        results.append(EvalResult(
            task_type="text-generation", dataset_type=HELLASWAG_DATASET, dataset_name="HellaSwag",
            dataset_split="validation", metric_type="acc_norm", metric_name="accuracy (length-normalised)",
            metric_value=round(float(hellaswag["acc_norm"]), 4)))
    return results


def make_model_card(folder: str | os.PathLike, info: dict | None = None) -> str:
    """The ``README.md`` text for the model in ``folder``: Hub metadata and the run's facts.

    The architecture and parameter count come from the folder (``config.json``, safetensors headers). ``info``
    supplies the rest; any key may be missing: ``repo_id`` (default: the folder's path), ``license`` (``mit``),
    ``model_name``, ``data_source`` (a shard manifest's ``source``) or ``datasets`` + ``data_description``,
    ``step``, ``tokens_seen``, ``hyperparameters``, ``val_loss`` (+ ``val_loss_step``), ``hellaswag``
    (``{"acc_norm", "acc", "n"}`` as ``minigpt eval-hellaswag`` writes), ``gpt2_copy`` (a plain GPT-2 copy is in
    the repo's ``gpt2/`` folder). :func:`card_info_from_checkpoint` reads most of these from a trainer checkpoint.
    Tokens are redacted from every value.
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    info = redact(dict(info or {}))
    config = _read_json(folder / "config.json")
    if not config:
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); give a checkpoint folder")
    repo_id = info.get("repo_id") or str(folder)
    model_name = info.get("model_name") or Path(repo_id).name
    datasets, data_description = _data_from_source(info.get("data_source"))
    datasets = info.get("datasets") or datasets
    data_description = info.get("data_description") or data_description or ", ".join(datasets) or "not recorded"
    card_data = ModelCardData(
        language="en", license=info.get("license", "mit"), library_name="transformers",
        pipeline_tag="text-generation", tags=TAGS, datasets=datasets or None, model_name=model_name,
        eval_results=_eval_results(info, datasets[0] if datasets else "unknown") or None,
    )
    params = _count_parameters(folder)
    architecture = [
        ("Layers", config.get("n_layer")),
        ("Attention heads", config.get("n_head")),
        ("Width (n_embd)", config.get("n_embd")),
        ("Context (block_size)", config.get("block_size")),
        ("Vocabulary", config.get("vocab_size")),
        ("Parameters", params and f"{params[0]:,} ({params[0] / 1e6:.1f}M, {params[1]})"),
    ]
    training = [("Data", data_description), ("Optimizer steps", info.get("step")),
                ("Tokens seen", info.get("tokens_seen"))]
    at_step = f" (step {info['val_loss_step']:,})" if info.get("val_loss_step") is not None else ""
    results = [(f"Validation loss{at_step}", info.get("val_loss"))]
    hellaswag = info.get("hellaswag") or {}
    if hellaswag.get("acc_norm") is not None:
        n = f" (n={hellaswag['n']:,})" if hellaswag.get("n") else ""
        results += [(f"HellaSwag acc_norm{n}", hellaswag["acc_norm"]), (f"HellaSwag acc{n}", hellaswag.get("acc"))]
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), model_name=model_name, homepage=HOMEPAGE, repo_id=repo_id,
        architecture=_table(architecture), training=_table(training),
        hyperparameters=_table(sorted((info.get("hyperparameters") or {}).items()), ("Name", "Value")),
        results=_table(results, ("Metric", "Value")), gpt2_hellaswag=GPT2_124M_HELLASWAG,
        gpt2_copy=bool(info.get("gpt2_copy")),
        budget=params and (f"{_tokens(params[0])} parameters is about "
                           f"{_tokens(TOKENS_PER_PARAMETER * params[0])} tokens"),
    )
    return card.content


def card_info_from_checkpoint(folder: str | os.PathLike) -> dict:
    """The card's ``info`` that a trainer checkpoint records about its run; {} for a bare model folder.

    From ``trainer_state.json``: the step, tokens seen, the recipe's hyper-parameters and the data (the manifest in
    its ``data_dir`` when that folder is reachable from here, else the embedded corpus if it trained on that). From
    the run's TensorBoard logs: the last validation loss and HellaSwag scores logged up to that step.
    """
    from .data import EMBEDDED_SOURCE, MANIFEST_NAME

    folder = Path(folder)
    state = _read_json(folder / ckpt.TRAINER_STATE_NAME)
    if not state:
        return {}
    args = state.get("args", {})
    train, data = args.get("train", {}), args.get("data", {})
    hyper = {name: train.get(name) for name in HYPERPARAMETERS["train"]}
    hyper.update({name: data.get(name) for name in HYPERPARAMETERS["data"]})
    hyper.update({name: state.get(name) for name in HYPERPARAMETERS["state"]})
    hyper["warmup_steps"] = state.get("recipe", {}).get("warmup_steps")
    info = {"step": state.get("step"), "tokens_seen": state.get("tokens_seen"), "hyperparameters": hyper}
    manifest = _read_json(Path(data.get("data_dir", "")) / MANIFEST_NAME)
    if manifest.get("source"):
        info["data_source"] = manifest["source"]
    elif data.get("data_source") == "embedded":
        info["data_source"] = EMBEDDED_SOURCE
    run_dir = ckpt.run_dir_of(folder)
    if run_dir is not None and state.get("step") is not None:
        last = ckpt.last_logged(run_dir, state["step"], ("val/loss", "hellaswag/acc", "hellaswag/acc_norm"))
        if "val/loss" in last:
            info["val_loss_step"], info["val_loss"] = last["val/loss"]
        if "hellaswag/acc_norm" in last:
            info["hellaswag"] = {"acc_norm": last["hellaswag/acc_norm"][1]}
            if "hellaswag/acc" in last:
                info["hellaswag"]["acc"] = last["hellaswag/acc"][1]
    return info


def write_model_card(folder: str | os.PathLike, info: dict | None = None) -> Path:
    """Write :func:`make_model_card` to ``folder/README.md`` atomically; its path."""
    path = Path(folder) / "README.md"
    ckpt.write_text_atomic(path, make_model_card(folder, info))
    return path
