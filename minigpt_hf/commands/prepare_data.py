"""Tokenise a corpus into GPT-2 token shards for training (build-nanogpt's fineweb.py, any source).

    minigpt prepare-data --out_dir data/shakespeare                      # the embedded corpus
    minigpt prepare-data --out_dir data/mine --input texts/ notes.jsonl  # local files
    minigpt prepare-data --out_dir data/fineweb-edu --dataset HuggingFaceFW/fineweb-edu \\
        --dataset_config sample-10BT --max_tokens 101000000               # the notes: 100M train + 1M val

The flags can also come from one .yaml or .json file: ``minigpt prepare-data args.yaml``. The same command run again
resumes an interrupted preparation after its last finished shard, and is a no-op ("already prepared") on a finished
one; another command into the same folder is refused unless --overwrite, with which the new dataset is built beside
the old one, which stays usable until the new one is complete.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..arguments import from_mapping, parse_dataclasses, read_yaml
from . import command


@dataclass
class PrepareArguments:
    """The flags of this script; without --input or --dataset, the embedded corpus."""

    out_dir: str = field(metadata={"help": "Folder for the shards and manifest.json."})
    input: list[str] = field(
        default_factory=list,
        metadata={"help": "Local .txt (one document per file), .jsonl, .json or .parquet files or folders of them."},
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "A `datasets` dataset (hub name or local folder), e.g. HuggingFaceFW/fineweb-edu."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Its configuration, e.g. sample-10BT."})
    split: str = field(default="train", metadata={"help": "Which split of --dataset to read."})
    streaming: bool = field(default=True, metadata={"help": "Stream --dataset instead of downloading it first."})
    text_field: str = field(default="text", metadata={"help": "The text column of --dataset / .jsonl / .parquet."})
    prefix: str | None = field(
        default=None, metadata={"help": "Shard file prefix; default: shakespeare, the dataset's name, or 'local'."}
    )
    shard_size: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per train shard; default 10,000,000 (the notes), 250,000 for the embedded corpus."
        },
    )
    val_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Tokens of the val split; default 1,000,000 (the notes), 100,000 for the embedded corpus."
        },
    )
    max_tokens: int | None = field(default=None, metadata={"help": "Stop after this many tokens (val + train)."})
    num_proc: int = field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        metadata={"help": "Tokenising processes; the default is half the CPUs."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace a dataset in --out_dir prepared by another command (kept until the new one is "
                          "complete), or discard another command's unfinished preparation there."},
    )


@command
def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), write the shards and print a summary."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    prog = "minigpt prepare-data"
    start = time.time()
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        args = from_mapping(PrepareArguments, read_yaml(argv[0]), argv[0], prog)  # JSON is YAML too
    else:
        (args,) = parse_dataclasses((PrepareArguments,), argv, prog, __doc__, config_flag=False)
    prepare(args, log=lambda line: print(line, flush=True), started=start)
    return 0


def prepare(args: PrepareArguments, log=None, started: float | None = None) -> dict:
    """Open the source that `args` name and write its shards (or resume, or find them done); the manifest."""
    from .. import data

    if args.dataset and args.input:
        raise ValueError("give --dataset or --input, not both")
    if args.num_proc < 1:
        raise ValueError(f"--num_proc {args.num_proc}: must be at least 1")
    shard_size, val_tokens = data.SHARD_SIZE, data.VAL_TOKENS
    if args.dataset:
        source = data.dataset_source(args.dataset, args.dataset_config, args.split, args.text_field, args.streaming)
        prefix = Path(args.dataset).name.lower()
    elif args.input:
        source, prefix = data.files_source(args.input, args.text_field), "local"
    else:
        source, prefix = data.embedded_source(), "shakespeare"
        shard_size, val_tokens = data.EMBEDDED_SHARD_SIZE, data.EMBEDDED_VAL_TOKENS
    return data.prepare_shards(
        source,
        args.out_dir,
        prefix=args.prefix or prefix,
        shard_size=shard_size if args.shard_size is None else args.shard_size,
        val_tokens=val_tokens if args.val_tokens is None else args.val_tokens,
        max_tokens=args.max_tokens,
        num_proc=args.num_proc,
        overwrite=args.overwrite,
        log=log,
        started=started,
        handle_sigterm=True,
    )
