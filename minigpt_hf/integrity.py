"""Integrity on disk: sha256 of every file computed while it is written, disk errors named by file, a gap-free swap.

* :func:`recording` -- while a folder is written, the sha256 and size of each file, computed from the bytes handed to
  the kernel (never by reading the file again), and any I/O error raised as one :class:`WriteError` that names the
  file being written and the fix. How each writer is hashed:

  - ``model.safetensors``: transformers' ``save_pretrained`` calls ``safetensors.torch.save_file``, which writes from
    Rust. While recording, ``transformers.modeling_utils.safe_save_file`` is replaced by a function that serialises
    with ``safetensors.torch.save`` (the same bytes, as one ``bytes`` object: the shard's size once more in host
    memory, bounded by ``max_shard_size``) and writes them through a :class:`HashingWriter`.
  - ``torch.save`` (Accelerate's optimizer, scaler and RNG files): ``torch.save`` accepts a file object and writes
    its zip records to it in order. While recording, a ``torch.save`` given a path inside the folder, from the
    recording thread, is given a :class:`HashingWriter` of that path instead; any other call goes through unchanged.
  - our own JSON (trainer_state.json, the ``COMPLETE`` marker, ...): :func:`record` with the encoded bytes.
  - the rest are small files written by code that takes only a path and writes through ``open()``, ``shutil.copy``
    (``sendfile``: the bytes never pass through Python) or the Rust ``tokenizers`` library: config.json,
    generation_config.json, the copied modeling code, tokenizer.json, tokenizer_config.json (about 3.6 MB in all),
    and under FSDP the sharded files that ``torch.distributed.checkpoint`` writes from its own threads. These are
    hashed by reading them back right after they were written, from the page cache (a few ms), by the caller
    (:func:`minigpt_hf.checkpoint.mark_complete`). Hooking those writers would mean replacing ``builtins.open``
    for every thread of the process (the Hub pusher, TensorBoard) or re-implementing ``save_pretrained``.

  The replacements are installed only while some thread records, and act only for that thread and paths inside its
  folder; they write byte for byte what the originals write.
* :func:`exchange` -- ``renameat2(RENAME_EXCHANGE)``: two folders trade names in one step, so an overwritten target is
  never missing (Linux >= 3.15; False where the kernel, the C library or the file system lacks it).
* :func:`lock_dir` -- an advisory ``flock`` on a folder, held by a writer on its temporary folder so that a sweeper
  (the next run of the same command) deletes only what a dead process left.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import os
import re
import sys
import threading
from pathlib import Path

CHUNK = 64 << 20  # bytes per write() and per hash update when reading back

_FIXES = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space or raise the quota",
    errno.EROFS: "choose a writable file system",
    errno.EACCES: "check the permissions",
    errno.EPERM: "check the permissions",
    errno.EIO: "the disk reported an I/O error: check it (dmesg)",
    errno.EFBIG: "the file system cannot hold a file this large",
}
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust's std::io::Error shows (safetensors, tokenizers)
_TORCH_WRITE = re.compile(r"unexpected pos|PytorchStreamWriter failed writing|file write failed")


class WriteError(OSError):
    """A disk error while writing a file: one line naming the file, what happened and what to do."""

    def __init__(self, path, code: int | None, detail: str = "", then: str = "or write somewhere else"):
        self.path, self.detail, self.then = Path(path), detail, then
        reason = os.strerror(code) if code else "an I/O error"
        fix = _FIXES.get(code, "check the disk")
        self.message = f"{path}: {reason} while writing it{f' ({detail})' if detail else ''}; {fix}, {then}"
        super().__init__(self.message)
        self.errno = code

    def __str__(self) -> str:
        return self.message

    def reworded(self, path=None, detail: str | None = None, then: str | None = None) -> "WriteError":
        """The same error about ``path`` (e.g. the file's final name instead of its temporary one), with another
        context and next step."""
        return WriteError(path or self.path, self.errno, self.detail if detail is None else detail,
                          self.then if then is None else then)


def sha256_file(path) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class HashingWriter:
    """A binary file open for writing that hashes exactly the bytes the kernel accepted; ``torch.save`` and our own
    writers use it like a file. I/O errors are :class:`WriteError` naming ``shown`` (the file's name for messages)."""

    def __init__(self, path, shown=None, on_close=None):
        self.path, self.shown, self._on_close = Path(path), Path(shown or path), on_close
        self.size, self._digest = 0, hashlib.sha256()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            raise WriteError(self.shown, err.errno) from None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                n = os.write(self._fd, view[done:done + CHUNK])
                self._digest.update(view[done:done + n])
                done += n
        except OSError as err:
            raise WriteError(self.shown, err.errno) from None
        self.size += done
        return done

    def flush(self) -> None:  # nothing is buffered here
        pass

    def writable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as err:  # NFS reports a failed write-back at close
                raise WriteError(self.shown, err.errno) from None
            if self._on_close:
                self._on_close(self.path, self.size, self.hexdigest())

    def __enter__(self):
        return self

    def __exit__(self, typ, err, tb):
        if typ is None:
            self.close()
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ----------------------------------------------------------------------------------------------------------------------
# recording the files of a folder as they are written

_local = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0
_originals: dict = {}
_audit_hooked = False


def _recorder():
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


class Recorder:
    """The files written under ``folder`` by this thread: ``files[relpath] = (size, sha256)`` for those hashed while
    written; ``opened``: the paths Python code opened for writing there, in order (to name a failed file)."""

    def __init__(self, folder, shown=None):
        self.folder = Path(os.path.abspath(folder))
        self.shown = Path(shown or folder)
        self.files: dict[str, tuple[int, str]] = {}
        self.opened: list[str] = []

    def relative(self, path) -> str | None:
        """``path`` relative to the folder (posix), or None if it is not inside it."""
        if isinstance(path, int) or not isinstance(path, (str, bytes, os.PathLike)):
            return None
        path = os.path.abspath(os.fsdecode(path))
        root = str(self.folder)
        if not path.startswith(root + os.sep):
            return None
        return Path(path[len(root) + 1:]).as_posix()

    def add(self, path, size: int, digest: str) -> None:
        rel = self.relative(path)
        if rel is not None:
            self.files[rel] = (size, digest)

    def writer(self, path) -> HashingWriter:
        return HashingWriter(path, self.shown / self.relative(path), on_close=self.add)

    def _saw_open(self, args) -> None:
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
        rel = self.relative(path) if writing else None
        if rel is not None:
            self.opened.append(rel)

    def as_write_error(self, err: BaseException) -> WriteError | None:
        """``err`` as a :class:`WriteError` naming the file it happened to, if it is an I/O error; else None.

        The file is the one the error names; else, for an error of Python code, the last file it opened for
        writing here; for an error of a Rust library (``(os error N)``), the newest file that appeared here which
        neither Python opened nor this recorder hashed.
        """
        if isinstance(err, WriteError):
            return err
        if isinstance(err, OSError) and err.errno is not None:
            named = [r for r in (self.relative(getattr(err, "filename2", None)), self.relative(err.filename)) if r]
            rel = named[0] if named else (self.opened[-1] if self.opened else None)
            return WriteError(self.shown / rel if rel else self.shown, err.errno)
        text = str(err)
        match = _OS_ERROR.search(text)
        if match:
            code = int(match.group(1))
        elif isinstance(err, RuntimeError) and _TORCH_WRITE.search(text):  # torch.save of a path not hashed here
            code = errno.ENOSPC if _full(self.folder) else errno.EIO
        else:
            return None
        others = [p for p in self.folder.rglob("*") if p.is_file()
                  and (rel := p.relative_to(self.folder).as_posix()) not in self.files and rel not in self.opened]
        if others:
            rel = max(others, key=lambda p: p.stat().st_mtime_ns).relative_to(self.folder).as_posix()
        else:
            rel = self.opened[-1] if self.opened else None
        return WriteError(self.shown / rel if rel else self.shown, code)


def _full(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def shown_name(path) -> Path:
    """``path`` as messages name it: under the recorded folder's shown name if it is inside the folder this thread
    records (a file's final name while it is written under a temporary folder), else as it is."""
    rec = _recorder()
    rel = rec.relative(path) if rec is not None else None
    return rec.shown / rel if rel is not None else Path(path)


def record(path, size: int, digest: str) -> None:
    """Report a file this package wrote itself (its size and sha256) to the recording of the current thread."""
    rec = _recorder()
    if rec is not None:
        rec.add(path, size, digest)


def _audit(event, args):  # must never raise: it runs inside every open() of the process
    if event == "open":
        try:
            rec = _recorder()
            if rec is not None:
                rec._saw_open(args)
        except Exception:
            pass


def _torch_save(obj, f, *args, **kwargs):
    rec = _recorder()
    if rec is None or rec.relative(f) is None:
        return _originals["torch.save"](obj, f, *args, **kwargs)
    with rec.writer(f) as w:
        return _originals["torch.save"](obj, w, *args, **kwargs)


def _safe_save_file(tensors, filename, metadata=None):
    rec = _recorder()
    if rec is None or rec.relative(filename) is None:
        return _originals["safe_save_file"](tensors, filename, metadata=metadata)
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)  # the bytes save_file would write
    with rec.writer(filename) as w:
        w.write(data)


def _install() -> None:
    global _patch_users, _audit_hooked
    with _patch_lock:
        if not _audit_hooked:
            sys.addaudithook(_audit)  # permanent (audit hooks cannot be removed); a no-op while nothing records
            _audit_hooked = True
        if _patch_users == 0:
            torch = sys.modules.get("torch")
            if torch is not None:
                _originals["torch.save"] = torch.save
                torch.save = _torch_save
            modeling_utils = sys.modules.get("transformers.modeling_utils")
            if modeling_utils is not None:
                _originals["safe_save_file"] = modeling_utils.safe_save_file
                modeling_utils.safe_save_file = _safe_save_file
        _patch_users += 1


def _uninstall() -> None:
    global _patch_users
    with _patch_lock:
        _patch_users -= 1
        if _patch_users == 0:
            if "torch.save" in _originals:
                sys.modules["torch"].save = _originals.pop("torch.save")
            if "safe_save_file" in _originals:
                sys.modules["transformers.modeling_utils"].safe_save_file = _originals.pop("safe_save_file")


@contextlib.contextmanager
def recording(folder, shown=None):
    """Record the files this thread writes under ``folder`` (see the module's docstring) and yield the
    :class:`Recorder`; an I/O error inside becomes a :class:`WriteError` naming the file (under ``shown``, the
    folder's name for messages, e.g. its final name while it is written under a temporary one)."""
    rec = Recorder(folder, shown)
    _install()
    _local.stack = [*getattr(_local, "stack", []), rec]
    try:
        yield rec
    except BaseException as err:
        failure = rec.as_write_error(err)
        if failure is None or failure is err:
            raise
        raise failure from None
    finally:
        _local.stack = _local.stack[:-1]
        _uninstall()


# ----------------------------------------------------------------------------------------------------------------------
# swapping two folders, locking one

AT_FDCWD = -100
RENAME_EXCHANGE = 2
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


@functools.lru_cache(maxsize=None)
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a, b) -> bool:
    """Swap the names of ``a`` and ``b`` atomically (``renameat2(RENAME_EXCHANGE)``); False where that is not
    available (kernel < 3.15, a C library without the call, a file system without it, not Linux)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def lock_dir(path) -> int | None:
    """An exclusive non-blocking ``flock`` on the folder ``path``: its file descriptor (close it to unlock), or None
    if another process holds it, or if the file system cannot lock folders (then nothing can be known of it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
