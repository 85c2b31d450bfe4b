"""Sharing a checkpoint on the Hugging Face Hub: its model card, the files that go up, and the upload itself.

* :func:`make_model_card` / :func:`write_model_card` -- a ``README.md`` with valid Hub metadata (``ModelCardData``)
  and the run's architecture, data, hyper-parameters and results, read from the folder and from ``info``;
* :func:`files_to_upload` -- the model folder without the training state (optimizer, ``trainer_state.json``) unless
  asked: exactly what :func:`push_folder` and :class:`HubPusher` send;
* :func:`push_folder` -- a blocking push (``scripts/push_to_hub.py``); :class:`HubPusher` -- the trainer's pushes in
  one background thread, which never raise into the training loop and only ever add a README.md to a checkpoint;
* :func:`get_hub_token` / :func:`redact` -- the token comes from ``HF_TOKEN`` or ``hf auth login`` and is kept out of
  anything written (saved args, logs, cards).

Network calls happen only in :func:`push_folder` and :meth:`HubPusher.push`; everything else works offline.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from concurrent.futures import Future
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HOMEPAGE = "https://github.com/minigpt-hf/minigpt_hf"
TAGS = ["gpt2", "nanogpt", "minigpt", "causal-lm", "custom_code"]
TRAINING_STATE = ("training_state", "trainer_state.json")  # in a checkpoint folder, beside the model files
GPT2_124M_HELLASWAG = 0.2955
REDACTED = "<redacted>"
SECRET_KEYS = {"token", "hub_token", "hf_token", "use_auth_token", "auth_token", "access_token", "password", "api_key"}
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")
HELLASWAG_DATASET = "Rowan/hellaswag"
HYPERPARAMETERS = {  # what the card shows of a trainer checkpoint's trainer_state.json
    "train": ("total_batch_size", "max_steps", "max_lr", "min_lr", "weight_decay", "adam_beta1", "adam_beta2",
              "adam_epsilon", "grad_clip", "mixed_precision", "seed"),
    "data": ("micro_batch_size", "seq_len"),
    "state": ("world_size", "grad_accum_steps"),
}


class HubError(RuntimeError):
    """A push that failed: no token, the Hub unreachable or refusing. The message is one line saying what to do."""


# ----------------------------------------------------------------------------------------------------------------------
# the token


def get_hub_token(token: str | None = None) -> str:
    """``token``, else the one ``huggingface_hub`` finds (``HF_TOKEN``, then ``hf auth login``'s stored token).

    Raises :class:`HubError` when there is none.
    """
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` with a token that has write access"
        )
    return token


def _known_secrets(extra: tuple[str, ...] = ()) -> set[str]:
    """Token values this process could hold: the environment's, the stored login's, and ``extra``."""
    from huggingface_hub import constants

    secrets = {os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"), *extra}
    token_file = Path(constants.HF_TOKEN_PATH)
    if token_file.is_file():
        secrets.add(token_file.read_text(encoding="utf-8").strip())
    return {s for s in secrets if s}


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """``value`` (a string, or dicts/lists of them, e.g. training args) with every token replaced by ``<redacted>``.

    A token is any known value (``HF_TOKEN``, the stored login, ``secrets``), anything shaped like a Hugging Face
    token (``hf_`` + 30 or more letters and digits), and any non-empty value under a key such as ``token`` or
    ``hub_token``. Use it on whatever is written to disk or logged.
    """
    known = sorted(_known_secrets(tuple(secrets)), key=len, reverse=True)

    def clean(obj):
        if isinstance(obj, str):
            for secret in known:
                obj = obj.replace(secret, REDACTED)
            return TOKEN_PATTERN.sub(REDACTED, obj)
        if isinstance(obj, dict):
            return {k: REDACTED if str(k).lower() in SECRET_KEYS and obj[k] else clean(obj[k]) for k in obj}
        if isinstance(obj, (list, tuple)):
            return type(obj)(clean(v) for v in obj)
        return obj

    return clean(value)


# ----------------------------------------------------------------------------------------------------------------------
# what goes up


def files_to_upload(folder: str | os.PathLike, include_training_state: bool = False) -> list[tuple[str, int]]:
    """``(relative path, size in bytes)`` of every file that a push of ``folder`` sends, sorted.

    The model folder (weights, config, generation config, modeling code, tokenizer, README.md); the training state
    (``training_state/``, ``trainer_state.json``) only with ``include_training_state``. Hidden files and folders
    (``.git``, temporary names) never go.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); give a checkpoint folder")
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0] in TRAINING_STATE and not include_training_state:
            continue
        files.append((rel.as_posix(), path.stat().st_size))
    return files


def format_file_list(files: list[tuple[str, int]]) -> str:
    """The files and sizes as aligned lines, with a total."""
    width = max((len(name) for name, _ in files), default=0)
    lines = [f"{name:<{width}}  {size:>14,} B" for name, size in files]
    lines.append(f"{len(files)} files, {sum(size for _, size in files):,} bytes")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# the model card


def _count_parameters(folder: Path) -> tuple[int, str] | None:
    """Parameters stored in the folder's safetensors files (tied weights once) and their dtype; None if none."""
    from safetensors import safe_open

    total, dtypes = 0, set()
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="np") as f:
            for name in f.keys():
                tensor = f.get_slice(name)
                n = 1
                for dim in tensor.get_shape():
                    n *= dim
                total += n
                dtypes.add(tensor.get_dtype())
    return (total, "/".join(sorted(dtypes))) if total else None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _data_from_source(source: dict | None) -> tuple[list[str], str | None]:
    """Hub dataset ids and a description from a shard manifest's ``source`` (see ``minigpt_hf.data``)."""
    if not source:
        return [], None
    if source.get("type") == "dataset":
        name = source["name"]
        config = f" ({source['config']})" if source.get("config") else ""
        return [name], f"[{name}](https://huggingface.co/datasets/{name}){config}, split {source.get('split', 'train')}"
    if source.get("type") == "embedded":
        return [source["description"]], f"the corpus embedded in minigpt_hf: {source['description']}"
    return [], "local files: " + ", ".join(map(str, source.get("paths", [])))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def make_model_card(folder: str | os.PathLike, info: dict | None = None) -> str:
    """The ``README.md`` text for the model in ``folder``: Hub metadata and the run's facts.

    The architecture and parameter count come from the folder (``config.json``, safetensors headers). ``info``
    supplies the rest; any key may be missing:

    * ``repo_id`` -- where the model lives, used in the loading examples (default: the folder's path);
    * ``license`` (default ``mit``), ``model_name`` (default: the repo or folder name);
    * ``data_source`` -- a shard manifest's ``source`` (gives ``datasets`` and the data description), or
      ``datasets`` (Hub ids) and ``data_description`` directly;
    * ``step``, ``tokens_seen``, ``hyperparameters`` (a dict shown as a table);
    * ``val_loss`` (and ``val_loss_step``, the step it was measured at); ``hellaswag`` -- ``{"acc_norm", "acc", "n"}``
      as ``scripts/eval_hellaswag.py`` writes.

    :func:`card_info_from_checkpoint` reads most of these from a trainer checkpoint.

    Tokens are redacted from every value.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

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
    dataset_id = datasets[0] if datasets else "unknown"

    eval_results = []
    if info.get("val_loss") is not None:
        eval_results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=dataset_id,
                dataset_name="held-out tokens of the training data",
                dataset_split="validation",
                metric_type="loss",
                metric_name="validation loss (cross-entropy, nats/token)",
                metric_value=round(float(info["val_loss"]), 4),
            )
        )
    hellaswag = info.get("hellaswag") or {}
    if hellaswag.get("acc_norm") is not None:
        eval_results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=HELLASWAG_DATASET,
                dataset_name="HellaSwag",
                dataset_split="validation",
                metric_type="acc_norm",
                metric_name="accuracy (length-normalised)",
                metric_value=round(float(hellaswag["acc_norm"]), 4),
            )
        )
    card_data = ModelCardData(
        language="en",
        license=info.get("license", "mit"),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=TAGS,
        datasets=datasets or None,
        model_name=model_name,
        eval_results=eval_results or None,
    )

    params = _count_parameters(folder)
    arch = [
        ("Layers", config.get("n_layer")),
        ("Attention heads", config.get("n_head")),
        ("Width (n_embd)", config.get("n_embd")),
        ("Context (block_size)", config.get("block_size")),
        ("Vocabulary", config.get("vocab_size")),
        ("Parameters", params and f"{params[0]:,} ({params[0] / 1e6:.1f}M, {params[1]})"),
    ]
    training = [
        ("Data", data_description),
        ("Optimizer steps", info.get("step")),
        ("Tokens seen", info.get("tokens_seen")),
    ]
    at_step = f" (step {info['val_loss_step']:,})" if info.get("val_loss_step") is not None else ""
    results = [(f"Validation loss{at_step}", info.get("val_loss"))]
    if hellaswag.get("acc_norm") is not None:
        n = f" (n={hellaswag['n']:,})" if hellaswag.get("n") else ""
        results.append((f"HellaSwag acc_norm{n}", hellaswag["acc_norm"]))
        results.append((f"HellaSwag acc{n}", hellaswag.get("acc")))
    hyper = sorted((info.get("hyperparameters") or {}).items())

    def table(rows, head=("", "")):
        rows = [(k, v) for k, v in rows if v is not None]
        if not rows:
            return "Not recorded.\n"
        body = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows)
        return f"| {head[0]} | {head[1]} |\n|---|---|\n{body}\n"

    card = f"""
# {model_name}

A GPT-2 style causal language model (MiniGPT) trained with [minigpt_hf]({HOMEPAGE}): nanoGPT's GPT-2 small recipe as
a Hugging Face `transformers` model, trained with an Accelerate loop. The modeling code is stored with the weights, so
the model loads with `trust_remote_code=True` where `minigpt_hf` is not installed.

## Architecture

{table(arch)}
GPT-2 BPE tokenizer (50,257 tokens; the embedding is padded to the vocabulary size above and padded ids are never
generated), learned position embeddings, pre-LayerNorm blocks, GELU (tanh) MLP, weights tied between the token
embedding and the output head.

## Training

{table(training)}
### Hyper-parameters

{table(hyper, ("Name", "Value"))}
## Evaluation

{table(results, ("Metric", "Value"))}
For reference, OpenAI's GPT-2 124M (trained on far more tokens) scores HellaSwag acc_norm {GPT2_124M_HELLASWAG};
chance is 0.25.

## How to use

Without `minigpt_hf` installed, with the modeling code stored in this repository:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

model = AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
generator = pipeline("text-generation", model="{repo_id}", trust_remote_code=True)
print(generator("Hello, I'm a language model,", max_new_tokens=32, do_sample=True, top_k=50)[0]["generated_text"])
```

With `minigpt_hf` installed (`pip install minigpt-hf`), importing it registers the model with the Auto classes:

```python
import minigpt_hf  # noqa: F401
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("{repo_id}")
```

## Limitations

A small model trained on a small token budget (the compute-optimal budget for 124M parameters is about 2.5B tokens):
it writes fluent-looking but unreliable text, is not instruction-tuned, and carries the biases of its training data.
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{card}").content


def _run_results(run_dir: Path, step: int) -> dict:
    """The last validation loss and HellaSwag scores a run logged to TensorBoard at or before ``step``."""
    from .plotting import read_scalars

    try:
        scalars = read_scalars(run_dir)
    except FileNotFoundError:
        return {}
    last = {}
    for tag in ("val/loss", "hellaswag/acc", "hellaswag/acc_norm"):
        steps, values = scalars.get(tag, ((), ()))
        logged = [(int(s), float(v)) for s, v in zip(steps, values) if s <= step]
        if logged:
            last[tag] = logged[-1]
    info = {}
    if "val/loss" in last:
        info["val_loss_step"], info["val_loss"] = last["val/loss"]
    if "hellaswag/acc_norm" in last:
        info["hellaswag"] = {"acc_norm": last["hellaswag/acc_norm"][1]}
        if "hellaswag/acc" in last:
            info["hellaswag"]["acc"] = last["hellaswag/acc"][1]
    return info


def card_info_from_checkpoint(folder: str | os.PathLike) -> dict:
    """The card's ``info`` that a trainer checkpoint records about its run; {} for a bare model folder.

    From ``trainer_state.json``: the step, tokens seen, the recipe's hyper-parameters and the data (the manifest in
    its ``data_dir`` when that folder is reachable from here, else the embedded corpus if it trained on that). From
    the run's TensorBoard logs (``{output_dir}/checkpoints/step_N`` -> ``output_dir``): the last validation loss
    and HellaSwag scores logged up to that step.
    """
    from .data import EMBEDDED_SOURCE, MANIFEST_NAME

    folder = Path(folder)
    state = _read_json(folder / "trainer_state.json")
    if not state:
        return {}
    args = state.get("args", {})
    train, data = args.get("train", {}), args.get("data", {})
    hyper = {name: train.get(name) for name in HYPERPARAMETERS["train"]}
    hyper.update({name: data.get(name) for name in HYPERPARAMETERS["data"]})
    hyper.update({name: state.get(name) for name in HYPERPARAMETERS["state"]})
    if train.get("max_steps") is not None:  # as TrainArguments.num_warmup_steps: warmup_steps wins over the ratio
        ratio_steps = round(train.get("warmup_ratio", 0) * train["max_steps"])
        hyper["warmup_steps"] = ratio_steps if train.get("warmup_steps") is None else train["warmup_steps"]
    info = {"step": state.get("step"), "tokens_seen": state.get("tokens_seen"), "hyperparameters": hyper}
    manifest = _read_json(Path(data.get("data_dir", "")) / MANIFEST_NAME)
    if manifest.get("source"):
        info["data_source"] = manifest["source"]
    elif data.get("data_source") == "embedded":
        info["data_source"] = EMBEDDED_SOURCE
    if folder.parent.name == "checkpoints" and state.get("step") is not None:
        info.update(_run_results(folder.parent.parent, state["step"]))
    return info


def write_model_card(folder: str | os.PathLike, info: dict | None = None) -> Path:
    """Write :func:`make_model_card` to ``folder/README.md`` (to a temporary name, then renamed); its path."""
    path = Path(folder) / "README.md"
    tmp = path.with_name(".README.md.tmp")
    tmp.write_text(make_model_card(folder, info), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# pushing


def _hub_failure(action: str, repo_id: str, err: BaseException) -> HubError:
    """A one-line :class:`HubError` for ``err`` (redacted), with what to do next."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    detail = redact(" ".join(str(err).split()))[:300]
    if isinstance(err, OfflineModeIsEnabled):
        hint = "unset HF_HUB_OFFLINE and retry"
    elif isinstance(err, HfHubHTTPError) and err.response is not None and err.response.status_code in (401, 403):
        hint = f"check that the token has write access to {repo_id} (`hf auth login`) and retry"
    else:
        hint = "check the network and retry"
    return HubError(f"could not {action} {repo_id} on the Hugging Face Hub ({type(err).__name__}: {detail}); {hint}")


def _create_repo(api, repo_id: str, token: str, private: bool) -> None:
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    except Exception as err:
        raise _hub_failure("create", repo_id, err) from None


def _upload_files(api, repo_id: str, folder: Path, files: list[tuple[str, int]], token: str, message: str):
    """Upload exactly ``files`` of ``folder`` in one ``upload_folder`` call; the CommitInfo."""
    try:
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=message,
            token=token,
            allow_patterns=[glob.escape(name) for name, _ in files],
        )
    except Exception as err:
        raise _hub_failure("upload to", repo_id, err) from None


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    include_training_state: bool = False,
    commit_message: str | None = None,
    card_info: dict | None = None,
    api=None,
):
    """Push :func:`files_to_upload` of ``folder`` to the model repo ``repo_id`` (created if missing); the CommitInfo.

    With ``card_info`` the model card is (re)written to ``folder/README.md`` first -- only once the token is found
    and the repo exists; otherwise nothing in ``folder`` is written. Raises :class:`HubError` without a token or when
    the Hub fails.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(repo_id)
    folder = Path(folder)
    files_to_upload(folder, include_training_state)  # a bad folder is an error before any network call
    token = get_hub_token(token)
    api = api or HfApi()
    _create_repo(api, repo_id, token, private)
    if card_info is not None:
        write_model_card(folder, card_info)
    files = files_to_upload(folder, include_training_state)
    return _upload_files(api, repo_id, folder, files, token, commit_message or f"Upload {folder.name}")


class HubPusher:
    """The trainer's uploads: each :meth:`push` returns at once; the uploads run in order in one background thread.

    Failures (no token, Hub unreachable, refused) never raise into the caller: each is logged as one warning line
    and collected in :attr:`errors`, which :meth:`wait` returns at the end of training. Nothing in a checkpoint
    folder is changed or removed (a missing README.md may be added). The repo is created (``exist_ok``) with the
    first upload; :attr:`commits` lists the commit URLs of the uploads done.
    """

    def __init__(
        self,
        repo_id: str,
        private: bool = False,
        token: str | None = None,
        include_training_state: bool = False,
        api=None,
    ):
        from huggingface_hub import HfApi, get_token
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)  # a malformed id is an argument error, raised now
        if token is None and get_token() is None:
            logger.warning("no Hugging Face token (HF_TOKEN or `hf auth login`): checkpoints will be saved, but "
                           "pushing them to %s will fail", repo_id)
        self.repo_id, self.private, self.include_training_state = repo_id, private, include_training_state
        self._token = token
        self._api = api or HfApi()
        self._futures: list[Future] = []
        self._repo_created = False
        self.errors: list[str] = []
        self.commits: list[str] = []

    def push(
        self, folder: str | os.PathLike, commit_message: str | None = None, card_info: dict | None = None
    ) -> Future | None:
        """Queue an upload of ``folder``'s :func:`files_to_upload`; its Future (of a CommitInfo, or of None if the
        upload failed), or None if it could not even be queued (no token, not a model folder).

        A folder without a ``README.md`` first gets one: :func:`card_info_from_checkpoint`, updated with
        ``card_info``.
        """
        folder = Path(folder)
        try:
            token = get_hub_token(self._token)
            if not (folder / "README.md").exists():
                info = {**card_info_from_checkpoint(folder), "repo_id": self.repo_id, **(card_info or {})}
                write_model_card(folder, info)
            files = files_to_upload(folder, self.include_training_state)
            message = commit_message or f"Upload {folder.name}"
            future = self._api.run_as_future(self._push_now, folder, files, token, message)
        except Exception as err:
            self._fail(folder, err)
            return None
        self._futures.append(future)
        return future

    def _push_now(self, folder: Path, files: list[tuple[str, int]], token: str, message: str):
        """Runs in the background thread; records the outcome before the Future completes."""
        try:
            if not self._repo_created:
                _create_repo(self._api, self.repo_id, token, self.private)
                self._repo_created = True
            commit = _upload_files(self._api, self.repo_id, folder, files, token, message)
        except Exception as err:
            self._fail(folder, err)
            return None
        self.commits.append(commit.commit_url)
        logger.info("pushed %s to %s", folder, commit.commit_url)
        return commit

    def _fail(self, folder: Path, err: BaseException) -> None:
        message = f"push of {folder} to {self.repo_id} failed: {redact(str(err))}"
        if isinstance(err, HubError):
            message += (f"; the checkpoint is saved, push it later: python scripts/push_to_hub.py {folder} "
                        f"--repo-id {self.repo_id}")
        self.errors.append(message)
        logger.warning(message)

    def wait(self, timeout: float | None = None) -> list[str]:
        """Wait up to ``timeout`` seconds in all for the queued uploads; the error messages (empty if all went up)."""
        from concurrent.futures import wait

        _, pending = wait(self._futures, timeout=timeout)
        self._futures = list(pending)
        if pending:
            self.errors.append(f"{len(pending)} push(es) to {self.repo_id} still running after {timeout} s")
            logger.warning(self.errors[-1])
        return list(self.errors)
