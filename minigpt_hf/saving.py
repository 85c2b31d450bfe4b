"""Writing model folders atomically: a complete ``save_pretrained`` layout or nothing.

A folder is written under a temporary sibling name and renamed into place only once every file is there, so a crash
never leaves a folder that looks like a finished checkpoint, and a finished one is never overwritten without asking.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary directory that becomes ``path`` when the block exits without error.

    An existing ``path`` is an error unless ``overwrite``; then it is replaced only after the new folder is complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output folder or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model_folder(model, path, tokenizer=None, overwrite: bool = False, **save_kwargs) -> Path:
    """``save_pretrained`` the model (safetensors, config, generation config, modeling code) and the tokenizer
    (the bundled GPT-2 one by default) into ``path``, atomically."""
    if tokenizer is None:
        from .tokenization import get_tokenizer

        tokenizer = get_tokenizer(model_max_length=model.config.max_position_embeddings)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, **save_kwargs)
        tokenizer.save_pretrained(tmp)
    return Path(path)
