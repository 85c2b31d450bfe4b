"""Shared command-line plumbing: user errors become one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Call ``main(argv)`` and exit with its status; a user error prints ``error: ...`` instead of a traceback."""
    try:
        status = main(argv)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def parse_dtype(name: str):
    """'fp32' | 'bf16' | 'fp16' (or torch names) -> torch.dtype."""
    import torch

    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use one of fp32, bf16, fp16")
    return table[name]
