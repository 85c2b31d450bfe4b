"""The programs of minigpt_hf: one module per command, each with ``main(argv=None) -> int``.

``minigpt <command> ...`` (and ``python -m minigpt_hf <command> ...``) runs them; ``scripts/`` holds shims so that
``accelerate launch scripts/train.py`` keeps working. Every command reports bad input the same way: one line
``error: <what>; <what to do>`` on stderr, printed by the launch's first process only, and exit code 2.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
from collections.abc import Callable

# name -> (module, one-line help)
COMMANDS = {
    "train": ("train", "pre-train a model (several processes: accelerate launch -m minigpt_hf train ...)"),
    "prepare-data": ("prepare_data", "tokenise a corpus (embedded, local files or a dataset) into token shards"),
    "generate": ("generate", "sample from a checkpoint, from GPT-2 weights or from a random model"),
    "convert": ("convert", "convert an HF GPT-2 checkpoint into a MiniGPT folder"),
    "export": ("export", "export a MiniGPT checkpoint as a plain GPT-2 folder (no custom code)"),
    "eval-hellaswag": ("eval_hellaswag", "HellaSwag accuracy of any causal LM"),
    "eval-loss": ("eval_loss", "validation loss and perplexity of any causal LM on token shards"),
    "plot": ("plot", "the training figures from a run's TensorBoard logs"),
    "landscape": ("landscape", "the loss landscape around a checkpoint"),
    "push": ("push", "push a checkpoint folder to the Hugging Face Hub, with a model card"),
    "verify": ("verify", "check a checkpoint, a run or a data folder against the checksums written with it"),
}

EXIT_INPUT_ERROR = 2
NON_MAIN_GRACE_S = 10.0  # how long another process of a launch waits on an input error before it exits
# whether a command runs as this process's program (``minigpt ...``, ``python -m minigpt_hf ...``, a script shim:
# its arguments from sys.argv), not called from Python: only then may it leave process-wide state behind it
AS_PROGRAM = False
_OS_HINTS = {
    errno.ENOSPC: "free some disk space, or write somewhere else",
    errno.EDQUOT: "free some disk space, or write somewhere else",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
}


def is_main_process() -> bool:
    """Whether this is the first process of a launch (or not launched at all)."""
    return os.environ.get("RANK", "0") == "0"


def describe(err: BaseException) -> str:
    """An input error as one line: what went wrong and what to do."""
    if isinstance(err, OSError) and err.errno in _OS_HINTS and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror}; {_OS_HINTS[err.errno]}"
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split())


def input_errors() -> tuple[type[BaseException], ...]:
    from ..checkpoint import FolderLockedError
    from ..hub import HubError

    return ValueError, OSError, FolderLockedError, HubError


def command(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a command's ``main``: bad input becomes one line on stderr (first process only) and exit code 2;
    Ctrl-C that the command did not handle, exit code 130."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except Exception as err:  # (not `except input_errors()`: that would import them for every SystemExit)
            if not isinstance(err, input_errors()):
                raise
            if is_main_process():
                print(f"error: {describe(err)}", file=sys.stderr, flush=True)
            else:
                # torch's launcher ends every worker as soon as one exits: the first process, maybe still loading,
                # must get to say the line (it exits first, and this one is ended). Still alive after the wait, this
                # was the only process with the error (the first is waiting for it): it says so itself.
                time.sleep(NON_MAIN_GRACE_S)
                print(f"[rank {os.environ.get('RANK')}] error: {describe(err)}", file=sys.stderr, flush=True)
            return EXIT_INPUT_ERROR
        except KeyboardInterrupt:
            if is_main_process():
                print("interrupted", file=sys.stderr, flush=True)
            return 130

    return wrapper


def main(argv: list[str] | None = None) -> int:
    """``minigpt <command> [args]``: run one command."""
    import importlib

    global AS_PROGRAM
    AS_PROGRAM = AS_PROGRAM or argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
        print("usage: minigpt <command> [--help | args]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv else EXIT_INPUT_ERROR
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else "run minigpt --help for the list"
        print(f"error: unknown command {name!r}; {hint}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    return module.main(rest)
