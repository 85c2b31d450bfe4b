"""The run directory on disk: its layout, the training state, and writes that a crash can never leave half-done.

This is the only module that knows the layout; the trainer, the Hub pusher, the plots and the evaluations read
through it::

    {output_dir}/
        run.lock                 -- held (flock) by the run's main process for the whole run; who holds it, inside
        log.txt, tensorboard/
        checkpoints/step_000300/ -- finished: holds COMPLETE, written last (the files, their sizes and sha256)
            config.json, model.safetensors, generation_config.json, tokenizer files, modeling code
            trainer_state.json   -- step, world size, the recipe, the data manifest's hash, every rank's loader state
            training_state/      -- accelerator.save_state: optimizer.bin, scaler.pt (fp16), random_states_{rank}.pkl
        checkpoints/.step_000300.tmp-*   a save in progress (swept on start: only this run can own it)
        checkpoints/.trash-step_000100-* a pruned checkpoint being deleted (swept on start)
        checkpoints/step_000400.damaged  a checkpoint that failed verification when a run resumed from `latest`

Guarantees: a folder is published by one ``rename`` after its files and the folder itself are fsynced, so a kill or
a power loss shows the old state or the new one; a checkpoint counts as finished only with its ``COMPLETE`` marker
(also after a copy), which records every file's size and sha256 (computed while the file was written:
:mod:`minigpt_hf.integrity`), so a truncated or altered file is caught by :func:`verify_folder`; pruning renames a
checkpoint out of the way before deleting it; a save never replaces a finished checkpoint; an overwrite
(:func:`atomic_directory`) swaps the new folder in with no moment without the target.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import integrity
from .integrity import WriteError, recording, sha256_file  # noqa: F401 (the writers of a folder use them from here)

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_STATE_DIR = "training_state"
COMPLETE_NAME = "COMPLETE"
LOCK_NAME = "run.lock"
DAMAGED_SUFFIX = ".damaged"  # a checkpoint that failed verification on resume, kept aside under this suffix
LOG_NAME = "log.txt"
TENSORBOARD_DIR = "tensorboard"
TRAINER_STATE_KEYS = ("step", "world_size", "grad_accum_steps", "config_hash", "model_config", "recipe", "args",
                      "loader_state", "skipped_steps")
_STEP_NAME = re.compile(r"step_(\d+)")


class IncompleteCheckpointError(ValueError):
    """A checkpoint folder that was never finished, or whose files no longer match what was written."""


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock."""


# ----------------------------------------------------------------------------------------------------------------------
# durable, atomic writes


def fsync_tree(path: Path) -> None:
    """fsync every file under ``path``, then every folder bottom-up (so their entries are on disk too)."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            file = os.path.join(root, name)
            try:
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
            except OSError as err:  # a failed write-back surfaces here: name the file
                raise WriteError(integrity.shown_name(file), err.errno) from None
        fsync_dir(Path(root))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a unique temporary name beside ``path``, fsync it, and rename it over ``path``.

    Its sha256 is reported to the folder being recorded, if any (:func:`minigpt_hf.integrity.recording`); a disk
    error is a :class:`WriteError` naming ``path``."""
    path = Path(path)
    data = text.encode("utf-8")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary; the file gets the usual mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, WriteError) and err.errno is not None:
            raise WriteError(integrity.shown_name(path), err.errno) from None
        raise
    fsync_dir(path.parent)
    integrity.record(path, len(data), hashlib.sha256(data).hexdigest())


def publish(tmp: Path, path: Path) -> None:
    """Rename the finished folder ``tmp`` to ``path``; never over a non-empty ``path`` (FileExistsError)."""
    fsync_tree(tmp)
    try:
        os.rename(tmp, path)  # replaces an empty folder at most; fails on one with files in it
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(f"{path} already exists and is not replaced; choose another name") from None
        raise
    fsync_dir(path.parent)


def _replace(tmp: Path, path: Path) -> Path:
    """Put the finished folder ``tmp`` in the place of the existing ``path``; the folder now holding the old one.

    One ``renameat2(RENAME_EXCHANGE)`` where the kernel and file system have it: ``path`` is never missing, and the
    old folder ends up under ``tmp``'s name. Elsewhere two renames (``path`` -> ``.trash-*``, ``tmp`` -> ``path``):
    a kill between them leaves no ``path``, and :func:`sweep_target` puts the old folder back on the next run.
    """
    if integrity.exchange(tmp, path):
        fsync_dir(path.parent)
        return tmp
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.time_ns()}")
    os.rename(path, trash)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(trash, path)
        raise
    fsync_dir(path.parent)
    return trash


def _leftover_patterns(name: str) -> tuple[re.Pattern, re.Pattern]:
    """The temporaries :func:`atomic_directory` makes for a target ``name``: ``.NAME.tmp-*`` and ``.trash-NAME-*``."""
    return (re.compile(rf"\.{re.escape(name)}\.tmp-[A-Za-z0-9_]+"),
            re.compile(rf"\.trash-{re.escape(name)}-\d+-(\d+)"))


def sweep_target(path: str | os.PathLike) -> list[str]:
    """Clean up after interrupted writes of the folder ``path`` (by :func:`atomic_directory`); what was done.

    If ``path`` is missing and an interrupted two-rename overwrite moved the old folder to ``.trash-*``, it is put
    back. Then every ``.NAME.tmp-*`` and ``.trash-NAME-*`` beside it is deleted -- only those no live process holds
    (each writer holds a ``flock`` on its temporary folder, and on the old folder while it swaps them).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    tmp_pattern, trash_pattern = _leftover_patterns(path.name)
    hidden = [p for p in path.parent.iterdir() if p.name.startswith(".") and p.is_dir()]
    trash = sorted((p for p in hidden if trash_pattern.fullmatch(p.name)),
                   key=lambda p: int(trash_pattern.fullmatch(p.name).group(1)))
    notes = []
    if trash and not path.exists():
        newest = trash.pop()
        fd = integrity.lock_dir(newest)
        if fd is not None:
            try:
                os.rename(newest, path)
                fsync_dir(path.parent)
            finally:
                os.close(fd)
            notes.append(f"restored {path} from {newest.name}: an interrupted overwrite had moved it aside")
    for leftover in trash + [p for p in hidden if tmp_pattern.fullmatch(p.name)]:
        fd = integrity.lock_dir(leftover)
        if fd is None:
            notes.append(f"left {leftover} alone: a live process holds it (or this file system cannot lock folders)")
            continue
        try:
            shutil.rmtree(leftover, ignore_errors=True)
        finally:
            os.close(fd)
        notes.append(f"removed {leftover}, left by an interrupted write of {path.name}")
    return notes


def _locked_tempdir(path: Path) -> tuple[Path, int | None]:
    """A new temporary folder beside ``path`` and the ``flock`` this process holds on it (None where the file
    system cannot lock folders), so that :func:`sweep_target` in another process leaves it alone."""
    while True:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        fd = integrity.lock_dir(tmp)
        try:  # a sweeper may have taken the folder between mkdtemp and the lock: then make another
            if fd is None or os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary folder beside ``path`` that becomes ``path`` when the block exits without error.

    First the leftovers of earlier interrupted writes of ``path`` are cleaned up (:func:`sweep_target`; each is
    logged). An existing ``path`` is an error unless ``overwrite``; then the new folder, once complete and fsynced,
    trades places with the old one in one step (:func:`_replace`), and the old one is deleted. On any error (a full
    disk, a signal) the temporary folder is removed and ``path`` is as it was.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder; choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    for note in sweep_target(path):
        logger.warning(note)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output folder or pass --overwrite")
    tmp, lock = _locked_tempdir(path)
    try:
        tmp.chmod(0o777 & ~_umask())
        yield tmp
        if not path.exists():
            publish(tmp, path)
        else:
            fsync_tree(tmp)  # the new folder is on disk before it takes the old one's place
            old_lock = integrity.lock_dir(path)  # the old folder is ours until deleted: no sweeper takes it
            try:
                old = _replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)  # what a kill leaves here, the next run sweeps
            finally:
                if old_lock is not None:
                    os.close(old_lock)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, WriteError) and err.path.is_relative_to(tmp):  # named by its final name
            raise err.reworded(path=path / err.path.relative_to(tmp)) from None
        raise
    finally:
        if lock is not None:
            os.close(lock)


def mark_complete(folder: Path, info: dict | None = None, hashes: dict | None = None) -> list[str]:
    """Write the ``COMPLETE`` marker last: every file's size and sha256, so a truncated, missing or altered file is
    detected later; the names of the files hashed here by reading them back.

    ``hashes`` (``{relative path: (size, sha256)}``, from :func:`minigpt_hf.integrity.recording`) are those computed
    while the files were written; any other file is read back now (the small files of third-party writers).
    """
    hashes = hashes or {}
    sizes, sums, read_back = {}, {}, []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name == COMPLETE_NAME:
            continue
        name = p.relative_to(folder).as_posix()
        size = p.stat().st_size
        if name in hashes:
            if hashes[name][0] != size:
                raise WriteError(integrity.shown_name(p), errno.EIO,
                                 f"{size:,} bytes on disk, {hashes[name][0]:,} were written")
            digest = hashes[name][1]
        else:
            size, digest = sha256_file(p)
            read_back.append(name)
        sizes[name], sums[name] = size, digest
    write_text_atomic(folder / COMPLETE_NAME, json.dumps({**(info or {}), "files": sizes, "sha256": sums}, indent=1)
                      + "\n")
    return read_back


def is_complete(folder: str | os.PathLike) -> bool:
    return (Path(folder) / COMPLETE_NAME).is_file()


def read_marker(folder: Path) -> tuple[bytes, dict, dict | None]:
    """The marker's bytes, its ``{file: size}`` and ``{file: sha256}`` (None in markers written before checksums)."""
    marker = folder / COMPLETE_NAME
    try:
        raw = marker.read_bytes()
        record = json.loads(raw)
        sizes, sums = record["files"], record.get("sha256")
        if not isinstance(sizes, dict) or not (sums is None or set(sums) == set(sizes)):
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise IncompleteCheckpointError(f"{marker} is damaged; use another checkpoint") from None
    return raw, sizes, sums


def folder_problems(folder: str | os.PathLike, contents: bool = True, remember: bool = True) -> list[str]:
    """Every way the finished folder ``folder`` differs from what was written, one line each: a file missing, of
    another size, or (``contents``) with another sha256. [] when all is well; then, with ``remember``, a full check
    is remembered (see :func:`verify_folder`)."""
    folder = Path(folder)
    try:
        raw, sizes, sums = read_marker(folder)
    except IncompleteCheckpointError as err:
        return [str(err).removesuffix("; use another checkpoint")]
    problems = []
    for name, size in sizes.items():
        path = folder / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            what = "is missing" if actual is None else f"has {actual:,} bytes, {size:,} were written"
            problems.append(f"{path} {what} (truncated or damaged)")
    if contents and sums and not problems:
        for name, digest in sums.items():
            try:
                actual = sha256_file(folder / name)[1]
            except OSError as err:
                problems.append(f"{folder / name} cannot be read ({err.strerror})")
                continue
            if actual != digest:
                problems.append(f"{folder / name} does not match the sha256 recorded when it was written (its "
                                "contents changed since: damaged)")
        if remember and not problems:
            _remember_verified(folder, raw, sizes)
    return problems


def _signature(folder: Path, names) -> dict:
    """What identifies these files as they are now: any rewrite, copy or replacement changes it."""
    signature = {}
    for name in names:
        st = os.stat(folder / name)
        signature[name] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    return signature


def verified_stamps_dir() -> Path:
    """Where full verifications are remembered: ``$XDG_CACHE_HOME/minigpt_hf/verified`` (``~/.cache/...``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "minigpt_hf" / "verified"


def _stamp(folder: Path, marker: bytes, names) -> tuple[Path, dict]:
    """The stamp file of ``folder`` (one per real path) and what it holds while the folder is as verified."""
    real = os.path.realpath(folder)
    stamp = {"folder": real, "marker_sha256": hashlib.sha256(marker).hexdigest(), "files": _signature(folder, names)}
    return verified_stamps_dir() / f"{hashlib.sha256(real.encode()).hexdigest()[:32]}.json", stamp


def _verified_before(folder: Path, marker: bytes, names) -> bool:
    path, stamp = _stamp(folder, marker, names)
    try:
        return json.loads(path.read_text(encoding="utf-8")) == stamp
    except (OSError, ValueError):
        return False


def _remember_verified(folder: Path, marker: bytes, names, keep: int = 1000) -> None:
    """Write the stamp of a full verification (never inside the folder: readers write nothing there); the oldest
    stamps beyond ``keep`` go. Where the cache cannot be written, the next read verifies again."""
    path, stamp = _stamp(folder, marker, names)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(stamp) + "\n")
        stamps = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in stamps[:-keep]:
            old.unlink(missing_ok=True)


def verify_folder(folder: str | os.PathLike, contents: bool | str = True) -> Path:
    """``folder`` if it is a usable model folder; else an error naming it and what to do.

    A folder written by this package (it has a ``COMPLETE`` marker, or a ``trainer_state.json``) must be finished
    and every file must have the size the marker records; with ``contents`` also its sha256 (every byte is read:
    about a second per 500 MB). ``contents="once"``: only if these files were not verified before as they are now
    -- a full verification leaves a stamp in :func:`verified_stamps_dir` (keyed by the folder's real path; it holds
    the marker's hash and every file's device, inode, size, mtime and ctime), so a second read of an unchanged
    folder costs a stat per file, while a rewritten, replaced or copied file is verified again. Any other folder with a
    ``config.json`` (a GPT-2 download, a folder from elsewhere) is taken as it is.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder; pass a checkpoint folder")
    marker = folder / COMPLETE_NAME
    if not marker.is_file():
        if (folder / TRAINER_STATE_NAME).exists() or (folder / TRAINING_STATE_DIR).exists():
            raise IncompleteCheckpointError(
                f"{folder} is an unfinished checkpoint (no {COMPLETE_NAME} marker: a save or a prune was "
                "interrupted); use another checkpoint")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a model folder (no config.json); pass a checkpoint folder")
        return folder
    raw, sizes, sums = read_marker(folder)
    problems = folder_problems(folder, contents=False)
    if not problems and sums and contents and (contents != "once" or not _verified_before(folder, raw, sizes)):
        problems = folder_problems(folder, contents=True)
    if problems:
        raise IncompleteCheckpointError(f"{problems[0]}; use another checkpoint")
    return folder


def save_model_folder(model, path, tokenizer=None, overwrite: bool = False, **save_kwargs) -> Path:
    """``save_pretrained`` the model (safetensors, config, generation config, modeling code) and the tokenizer
    (the bundled GPT-2 one by default) into ``path``, atomically, marked complete with every file's sha256."""
    if tokenizer is None:
        from .tokenization import get_tokenizer

        tokenizer = get_tokenizer(model_max_length=model.config.max_position_embeddings)
    with atomic_directory(path, overwrite=overwrite) as tmp, recording(tmp, path) as written:
        model.save_pretrained(tmp, **save_kwargs)
        tokenizer.save_pretrained(tmp)
        mark_complete(tmp, hashes=written.files)
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------------
# one folder, one run


class FolderLock:
    """An exclusive ``flock`` on ``{folder}/run.lock`` with its owner (pid, host, start time, command) inside.

    The kernel drops the lock when its process dies however it dies, so a lock file left by a dead process is
    simply taken over. On NFS, Linux maps flock to NFS byte-range locks (NFSv4 or NLM): it works where the server
    supports locking, but a client that loses the server may keep a lock it no longer holds; use local disks for
    safety, or one job per folder by convention.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str = "run", name: str = LOCK_NAME):
        self.folder, self.purpose = Path(folder), purpose
        self.path = self.folder / name
        self._fd: int | None = None
        self.previous_owner: dict | None = None

    def acquire(self, blocking: bool = False) -> "FolderLock":
        """Take the lock, or raise :class:`FolderLockedError` naming its owner (``blocking``: wait for it)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder} is a file, not a folder; choose another output folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            owner = self._read(fd)
            os.close(fd)
            who = (f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')} "
                   f"({owner.get('purpose')}: {owner.get('command')})" if owner else "another process")
            raise FolderLockedError(f"{self.folder} is in use by {who}; wait for it to finish or choose another "
                                    "folder") from None
        self.previous_owner = self._read(fd) or None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                 "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except ValueError:
            return {}

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays, naming the last owner
            self._fd = None

    def __enter__(self):
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints of a run


def checkpoints_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    return checkpoints_dir(output_dir) / f"step_{step:06d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the finished checkpoints of a run, oldest first."""
    root = checkpoints_dir(output_dir)
    found = [(int(m.group(1)), path) for path in root.glob("step_*")
             if (m := _STEP_NAME.fullmatch(path.name)) and is_complete(path)]
    return sorted(found)


def sweep(output_dir: str | os.PathLike) -> list[Path]:
    """Remove what interrupted saves and prunes of this run left behind (``.step_*.tmp-*``, ``.trash-*``); the
    paths removed. Call it only while holding the folder's lock: then no other process can own them. A ``step_*``
    folder without its marker is never deleted here (it may be a checkpoint of an older version): it is ignored."""
    removed = []
    for path in leftovers(output_dir):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def unfinished_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """``step_*`` folders without a ``COMPLETE`` marker: never resumed from, listed so the run can say so."""
    root = checkpoints_dir(output_dir)
    return sorted(p for p in root.glob("step_*") if _STEP_NAME.fullmatch(p.name) and p.is_dir() and not is_complete(p))


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` finished checkpoints (0 keeps all); the folders deleted.

    Each is first renamed to a hidden ``.trash-*`` name (one atomic step), then deleted, so a kill in between
    leaves a temporary that :func:`sweep` removes, never a ``step_*`` folder with half its files.
    """
    checkpoints = list_checkpoints(output_dir)
    doomed = [path for _, path in checkpoints[:-keep_last]] if keep_last > 0 else []
    for path in doomed:
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
        os.rename(path, trash)
        fsync_dir(path.parent)
        shutil.rmtree(trash)
    return doomed


def resolve_checkpoint(spec: str | None, output_dir: str | os.PathLike, skipped: list[str] | None = None
                       ) -> Path | None:
    """The checkpoint to resume from, verified file by file (sizes and sha256): None for a fresh run; ``latest``,
    the newest finished one in ``output_dir`` that verifies (None if there is none); or a folder, which must be a
    finished checkpoint that verifies.

    ``latest`` passes over damaged checkpoints newer than the one it takes: each is renamed to ``step_N.damaged``
    (kept for inspection, no longer a checkpoint of the run, so that neither a later save of that step nor pruning
    trips over it) and a line saying which and why is appended to ``skipped``. If no checkpoint verifies, nothing
    is renamed and the error lists them. Call it only while holding the run folder's lock."""
    if spec is None:
        return None
    if spec == "latest":
        damaged = []
        for _, path in reversed(list_checkpoints(output_dir)):
            try:
                verify_folder(path)
            except IncompleteCheckpointError as err:
                damaged.append((path, str(err).removesuffix("; use another checkpoint")))
                continue
            for bad, why in damaged:
                aside = bad.with_name(bad.name + DAMAGED_SUFFIX)
                n = 1
                while aside.exists():
                    n += 1
                    aside = bad.with_name(f"{bad.name}{DAMAGED_SUFFIX}-{n}")
                os.rename(bad, aside)
                fsync_dir(bad.parent)
                if skipped is not None:
                    skipped.append(f"skipped {bad.name}: {why}; kept as {aside.name}, resuming from {path.name}")
            return path
        if damaged:
            raise IncompleteCheckpointError(
                f"no checkpoint in {checkpoints_dir(output_dir)} verifies ({'; '.join(w for _, w in damaged)}); "
                "restore one from a copy, or start afresh with another --output_dir")
        return None
    path = Path(spec)
    if not (path / TRAINER_STATE_NAME).is_file() and not is_complete(path):
        raise FileNotFoundError(f"--resume_from_checkpoint {spec}: not a checkpoint folder (no {TRAINER_STATE_NAME})")
    return verify_folder(path)


def damaged_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints set aside by a resume because they failed verification (``step_N.damaged``)."""
    return sorted(p for p in checkpoints_dir(output_dir).glob(f"step_*{DAMAGED_SUFFIX}*") if p.is_dir())


def leftovers(output_dir: str | os.PathLike) -> list[Path]:
    """What interrupted saves and prunes left in the run's checkpoints folder (what :func:`sweep` removes)."""
    root = checkpoints_dir(output_dir)
    return sorted(p for p in root.glob(".*") if p.name.startswith((".step_", ".trash-")) and p.is_dir())


def lock_owner(folder: str | os.PathLike, name: str = LOCK_NAME) -> dict | None:
    """The owner recorded in ``folder``'s lock if a live process holds it (``{}`` if it names none); None if free."""
    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # shared with nothing: only tells whether someone holds it
    except BlockingIOError:
        owner = FolderLock._read(fd)
        os.close(fd)
        return owner
    os.close(fd)
    return None


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    """``trainer_state.json`` of a checkpoint, checked to be whole; an error naming the file otherwise."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing; resume from another checkpoint") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); resume from another checkpoint") from None
    missing = [key for key in TRAINER_STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; resume from another checkpoint")
    return state


def write_trainer_state(folder: Path, state: dict) -> None:
    write_text_atomic(folder / TRAINER_STATE_NAME, json.dumps(state, indent=2) + "\n")


def run_dir_of(checkpoint: str | os.PathLike) -> Path | None:
    """The run folder that holds ``checkpoint`` (``{output_dir}/checkpoints/step_N`` -> ``output_dir``), or None."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS_DIR else None


def config_hash(values: dict) -> str:
    """A short hash of a JSON-able dict (the architecture fields, a manifest)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------------
# secrets never written

REDACTED = "<redacted>"
SECRET_KEYS = {"token", "hub_token", "hf_token", "use_auth_token", "auth_token", "access_token", "password", "api_key"}
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")


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
# logged scalars


def read_scalars(run_dir) -> dict[str, tuple[Any, Any]]:
    """Every scalar tag in the TensorBoard event files under ``run_dir`` (searched recursively) as ``(steps,
    values)`` numpy arrays. Events from all files are merged by step; where a step was logged twice (a resumed run)
    the later write wins."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    files = sorted(p for p in run_dir.rglob("*tfevents*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{run_dir}: no TensorBoard event files (*tfevents*) found")
    events = defaultdict(list)
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={SCALARS: 0})  # 0 = keep every event
        accumulator.Reload()
        for tag in accumulator.Tags()[SCALARS]:
            events[tag] += [(e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag)]
    scalars = {}
    for tag, rows in events.items():
        by_step = {step: value for _, step, value in sorted(rows)}
        steps = np.array(sorted(by_step))
        scalars[tag] = (steps, np.array([by_step[s] for s in steps]))
    return scalars


def last_logged(run_dir, step: int, tags) -> dict[str, tuple[int, float]]:
    """``{tag: (step, value)}`` of the last value of each of ``tags`` logged at or before ``step``; {} without logs."""
    try:
        scalars = read_scalars(run_dir)
    except FileNotFoundError:
        return {}
    last = {}
    for tag in tags:
        steps, values = scalars.get(tag, ((), ()))
        logged = [(int(s), float(v)) for s, v in zip(steps, values) if s <= step]
        if logged:
            last[tag] = logged[-1]
    return last
