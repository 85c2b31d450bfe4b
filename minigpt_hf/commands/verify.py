"""Check that what is on disk is what was written: a checkpoint, every checkpoint of a run, or a data folder.

    minigpt verify out/gpt2-124m/checkpoints/step_000953   # a checkpoint, or any folder with a COMPLETE marker
    minigpt verify out/gpt2-124m                           # a run: every checkpoint, and what interrupted saves left
    minigpt verify data/fineweb-edu                        # a data folder: its shards against its manifest

Every file is read and its sha256 compared with the one recorded when it was written (about a second per 500 MB).
Prints one line per problem, then a summary. Exit status: 0 all is well, 1 problems found, 2 a path that is none of
these.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..arguments import ArgumentParser
from . import command


def check_checkpoint(folder: Path) -> tuple[list[str], list[str], int]:
    """(problems, notes, bytes checked) of one checkpoint or model folder with a marker."""
    from .. import checkpoint as ckpt

    if not ckpt.is_complete(folder):
        return [f"{folder} is an unfinished checkpoint (no {ckpt.COMPLETE_NAME} marker: a save or a prune was "
                "interrupted); nothing reads it: delete it"], [], 0
    problems = ckpt.folder_problems(folder)
    try:
        _, sizes, sums = ckpt.read_marker(folder)
    except ckpt.IncompleteCheckpointError:
        return problems, [], 0
    notes = [] if sums else [f"{folder} was written before checksums were recorded: sizes checked only"]
    return problems, notes, sum(sizes.values())


def check_run(run: Path) -> tuple[list[str], list[str], int]:
    """Every checkpoint of the run folder ``run``; unfinished, set-aside and temporary folders are problems too."""
    from .. import checkpoint as ckpt

    owner = ckpt.lock_owner(run)
    problems, notes, size = [], [], 0
    checkpoints = ckpt.list_checkpoints(run)
    for _, folder in checkpoints:
        found, said, n = check_checkpoint(folder)
        if owner is not None and not folder.exists():  # the live run pruned it meanwhile
            continue
        problems += found
        notes += said
        size += n
    for folder in ckpt.unfinished_checkpoints(run):
        problems.append(f"{folder} is an unfinished checkpoint (no {ckpt.COMPLETE_NAME} marker); a resume ignores "
                        "it: delete it")
    for folder in ckpt.damaged_checkpoints(run):
        problems.append(f"{folder} was set aside by a resume because it failed verification: inspect it, or "
                        "delete it")
    if owner is not None:
        who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
        notes.append(f"{run} is in use by {who}: temporary folders of its saves are not reported")
    else:
        for path in ckpt.leftovers(run):
            problems.append(f"{path} was left by an interrupted save or prune; the next run of this folder removes "
                            "it (or delete it)")
    if not checkpoints:
        notes.append(f"{ckpt.checkpoints_dir(run)} holds no finished checkpoint")
    return problems, notes, size


def check_data(folder: Path) -> tuple[list[str], list[str], int]:
    from ..data import verify_dataset

    size = sum(p.stat().st_size for p in folder.glob("*.npy"))
    return list(verify_dataset(folder)), [], size


def classify(path: Path):
    """The check for ``path``: a checkpoint, a run folder or a data folder; a ValueError for anything else."""
    from .. import checkpoint as ckpt

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a checkpoint, a run folder or a data folder")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; pass a checkpoint, a run folder or a data folder")
    if any((path / name).exists() for name in (ckpt.COMPLETE_NAME, ckpt.TRAINER_STATE_NAME, ckpt.TRAINING_STATE_DIR)):
        return "checkpoint", check_checkpoint
    if ckpt.checkpoints_dir(path).is_dir() or (path / ckpt.LOCK_NAME).exists():
        return "run folder", check_run
    from ..data import MANIFEST_NAME

    if (path / MANIFEST_NAME).is_file():
        return "data folder", check_data
    if (path / "config.json").is_file():
        raise ValueError(f"{path} has no {ckpt.COMPLETE_NAME} marker, so there is nothing to check its files "
                         "against (a folder not written by minigpt_hf?); pass a checkpoint, a run or a data folder")
    raise ValueError(f"{path} is not a checkpoint, a run folder or a data folder; pass one of these")


@command
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="minigpt verify", description=__doc__)
    parser.add_argument("path", type=Path, help="a checkpoint, a run folder (--output_dir) or a data folder")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    kind, check = classify(args.path)
    problems, notes, size = check(args.path)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(problem)
    verdict = f"{len(problems)} problem{'s' * (len(problems) > 1)}" if problems else "all is well"
    print(f"{args.path} ({kind}, {size / 1e6:,.1f} MB): {verdict}, checked in {time.perf_counter() - start:.1f} s")
    return 1 if problems else 0
