"""The arguments of a training run: three dataclasses (model, data, recipe), their YAML presets, and the parser.

``minigpt train --help`` lists every field. Values come from ``--config FILE.yaml`` (or the name of a preset shipped
in ``configs/``) and from flags; a flag wins over the file. Nothing here imports torch or transformers' models, so
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .presets import PRESETS

SAMPLE_PROMPT = "Hello, I'm a language model,"
# weight dtypes by name, for --dtype (evaluation.parse_dtype turns them into torch dtypes): the one table of them
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16",
          "float16": "float16", "auto": "auto"}


@dataclass
class ModelArguments:
    """Which model to train: a named shape with optional overrides, or weights to start from."""

    preset: str = field(default="gpt2-124m", metadata={"help": f"model shape, one of {', '.join(PRESETS)}"})
    n_layer: int | None = field(default=None, metadata={"help": "override the preset's number of layers"})
    n_head: int | None = field(default=None, metadata={"help": "override the preset's number of heads"})
    n_embd: int | None = field(default=None, metadata={"help": "override the preset's width"})
    block_size: int | None = field(default=None, metadata={"help": "override the preset's context length"})
    dropout: float | None = field(default=None, metadata={"help": "override the preset's dropout (0.0)"})
    loss_chunk_size: int = field(
        default=0, metadata={"help": "compute the training loss over chunks of this many tokens without "
                                     "materialising the (B, T, vocab) logits (a memory lever; 0 = off)"})
    init_from: str | None = field(
        default=None,
        metadata={"help": "start from these weights instead of a fresh model: a MiniGPT save_pretrained folder, or "
                          "an HF GPT-2 checkpoint (hub id such as gpt2, or a local folder) converted by "
                          "MiniGPTForCausalLM.from_gpt2; the architecture then comes from it, not from --preset"},
    )

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.init_from is not None and self.overrides():
            raise ValueError(f"--init_from takes the architecture from {self.init_from}; drop "
                             + ", ".join(f"--{k}" for k in self.overrides()))

    def overrides(self) -> dict:
        """The config fields given on top of the preset."""
        names = ("n_layer", "n_head", "n_embd", "block_size", "dropout")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass
class DataArguments:
    """Where the tokens come from and how they are cut: micro-batches of B rows of T tokens per process."""

    data_dir: str = field(default="data/shakespeare", metadata={"help": "folder of token shards with a manifest.json"})
    data_source: Literal["embedded", "shards"] = field(
        default="embedded",
        metadata={"help": "embedded: prepare the bundled Shakespeare corpus in --data_dir when it has no manifest; "
                          "shards: --data_dir must already hold shards (minigpt prepare-data)"},
    )
    micro_batch_size: int = field(default=64, metadata={"help": "B: rows per forward pass, per process"})
    seq_len: int = field(default=1024, metadata={"help": "T: tokens per row"})

    def __post_init__(self):
        bad = [f"--{name} {getattr(self, name)}" for name in ("micro_batch_size", "seq_len") if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)}: must be at least 1")


@dataclass
class TrainArguments:
    """The optimisation recipe (defaults: the notes' GPT-2 124M run) and the bookkeeping around it."""

    output_dir: str = field(default="out/gpt2-124m", metadata={"help": "log.txt, tensorboard/ and checkpoints/"})
    total_batch_size: int = field(
        default=524_288, metadata={"help": "tokens per optimizer step; grad_accum = total / (B * T * processes)"})
    max_steps: int = field(default=953, metadata={"help": "optimizer steps (the notes: 500M tokens / 524,288)"})
    max_lr: float = field(default=6e-4, metadata={"help": "peak learning rate, reached at the end of warmup"})
    min_lr: float = field(default=6e-5, metadata={"help": "learning rate at the last step (cosine decay)"})
    warmup_steps: int | None = field(default=None, metadata={"help": "linear warmup steps; wins over warmup_ratio"})
    warmup_ratio: float = field(default=0.0375, metadata={"help": "warmup as a fraction of max_steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decay of 2-D weights (not biases/LayerNorm)"})
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.95)
    adam_epsilon: float = field(default=1e-8)
    grad_clip: float = field(default=1.0, metadata={"help": "max global gradient norm (after unscaling)"})
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        default="bf16",
        metadata={"help": "no: fp32 (TF32 matmuls); bf16: autocast; fp16: autocast + dynamic loss scaling. "
                          "This flag wins over accelerate launch's --mixed_precision"},
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (through Accelerate)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward"})
    cpu_threads: int | None = field(
        default=None, metadata={"help": "intra-op CPU threads per process in a CPU run (torch.set_num_threads); "
                                        "default: PyTorch's count for a new run, the checkpoint's for a resumed one "
                                        "(the float sums split by thread: an exact resume needs the same count)"})
    seed: int = field(default=1337)
    log_every: int = field(default=1, metadata={"help": "log the training metrics every N steps"})
    report_to: str = field(
        default="tensorboard",
        metadata={"help": "where the metrics go: tensorboard (minigpt plot reads it), wandb, mlflow, comet_ml, aim, "
                          "clearml, dvclive, swanlab, trackio; several comma-separated, all (every one installed) or "
                          "none. pip install 'minigpt-hf[trackers]' adds wandb and mlflow"})
    project: str = field(
        default="minigpt_hf",
        metadata={"help": "the trackers' project: W&B project, MLflow experiment, ... (WANDB_PROJECT and "
                          "MLFLOW_EXPERIMENT_NAME win when set)"})
    run_name: str | None = field(
        default=None, metadata={"help": "the run's name in the trackers (default: the output folder's name)"})
    tags: str | None = field(
        default=None, metadata={"help": "comma-separated tags of the run in W&B, MLflow (key=value or key) and "
                                        "ClearML"})
    eval_every: int = field(default=50, metadata={"help": "validation loss every N steps (and at the end)"})
    eval_steps: int = field(default=20, metadata={"help": "validation batches per evaluation, per process"})
    sample_every: int = field(default=50, metadata={"help": "generate samples every N steps (and at the end)"})
    num_samples: int = field(default=4)
    sample_max_length: int = field(default=32, metadata={"help": "tokens per sample, prompt included"})
    sample_top_k: int = field(default=50)
    sample_prompt: str = field(default=SAMPLE_PROMPT)
    save_every: int = field(default=100, metadata={"help": "checkpoint every N steps (and at the end)"})
    keep_last: int = field(default=3, metadata={"help": "checkpoints to keep (the newest); 0 keeps all"})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "latest (the newest in output_dir, if any) or a checkpoint folder"})
    ddp_timeout: int = field(
        default=1800, metadata={"help": "seconds a process waits in a collective for the others before the run stops "
                                        "with a line naming the timeout (a hung or unreachable machine)"})
    hellaswag_path: str | None = field(default=None, metadata={"help": "HellaSwag .jsonl or dataset folder"})
    hellaswag_every: int = field(default=250)
    hellaswag_limit: int | None = field(default=None, metadata={"help": "score only the first N examples"})
    peak_flops: float | None = field(
        default=None, metadata={"help": "peak FLOP/s of one device for MFU (looked up for H100/H200/A100/T4)"})
    push_to_hub: bool = field(
        default=False, metadata={"help": "push each checkpoint's model folder and a model card to --hub_model_id, "
                                         "in the background"})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "USER/NAME of the Hub model repo (created if missing)"})
    hub_private: bool = field(default=False, metadata={"help": "create the Hub repo private"})
    hub_gpt2_copy: bool = field(
        default=False, metadata={"help": "with --push_to_hub, also push a plain GPT-2 copy of each checkpoint "
                                         "(GPT2LMHeadModel, no custom code) to the repo's gpt2/ folder"})
    allow_recipe_change: bool = field(
        default=False, metadata={"help": "resume although the recipe (learning rates, schedule, decay, betas, seed, "
                                         "precision, batch, data) differs from the checkpoint's; the changes are "
                                         "logged"})

    def __post_init__(self):
        from .trackers import parse_tags, resolve_report_to

        self.report_to = ",".join(resolve_report_to(self.report_to)) or "none"  # also from a YAML list
        self.tags = ",".join(parse_tags(self.tags)) or None
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id USER/NAME")
        positive = ("total_batch_size", "max_steps", "log_every", "eval_every", "eval_steps", "sample_every",
                    "num_samples", "sample_max_length", "save_every", "hellaswag_every")
        bad = [f"--{name} {getattr(self, name)}" for name in positive if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)}: must be at least 1")
        if self.mixed_precision not in ("no", "fp16", "bf16"):  # YAML reads a bare `no` as false
            raise ValueError(f"--mixed_precision {self.mixed_precision!r}: choose no, fp16 or bf16 (quote \"no\" in "
                             "YAML)")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"--cpu_threads {self.cpu_threads}: must be at least 1")
        if self.keep_last < 0:
            raise ValueError(f"--keep_last {self.keep_last}: must be 0 (keep all) or more")
        if self.ddp_timeout <= 0:
            raise ValueError(f"--ddp_timeout {self.ddp_timeout}: must be a positive number of seconds")
        if self.max_lr <= 0:
            raise ValueError(f"--max_lr {self.max_lr}: must be positive")
        if self.hub_gpt2_copy and not self.push_to_hub:
            raise ValueError("--hub_gpt2_copy needs --push_to_hub")
        if not 0 <= self.min_lr <= self.max_lr:
            raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr {self.min_lr}, max_lr {self.max_lr}")
        if self.warmup_steps is None and not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"--warmup_ratio {self.warmup_ratio}: must be in [0, 1)")
        if self.num_warmup_steps() < 0:
            raise ValueError(f"--warmup_steps {self.warmup_steps}: must be at least 0")

    def num_warmup_steps(self) -> int:
        """``warmup_steps`` if given, else ``warmup_ratio * max_steps`` rounded."""
        return self.warmup_steps if self.warmup_steps is not None else round(self.warmup_ratio * self.max_steps)


# ----------------------------------------------------------------------------------------------------------------------
# the parser: argparse with the project's error convention, and dataclasses as flags (HfArgumentParser's rules)


class UsageError(ValueError):
    """A bad command line: printed as one line ``error: <what>; <what to do>`` by the command wrapper (exit 2)."""


_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_TRUE, _FALSE = ("true", "yes", "y", "1", "on"), ("false", "no", "n", "0", "off")


def _join_negative_numbers(argv: list[str]) -> list[str]:
    """``--max_lr -1e-3`` as ``--max_lr=-1e-3``: argparse takes ``-1e-3`` for an option, not a value."""
    out = []
    for arg in argv:
        if out and _NUMBER.fullmatch(arg) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def to_bool(value) -> bool:
    """``true``/``false`` and their usual spellings (yes/no, 1/0, on/off) as a bool."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in _TRUE:
        return True
    if str(value).lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


to_bool.__name__ = "bool"  # argparse names the type in its messages


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` for every command: a bad command line is one :class:`UsageError` (printed as one
    line, exit 2) instead of a page of usage; an unknown flag names the closest known one; abbreviations are refused
    (``--max_step`` is not silently ``--max_steps``); a negative number may follow its flag with a space."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def flags(self) -> list[str]:
        return [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]

    def closest(self, flag: str) -> str | None:
        """The known flag nearest to ``flag`` (a typo, or a prefix of one), if any is near."""
        flags = self.flags()
        name = flag.split("=", 1)[0]
        near = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
        prefixed = [f for f in flags if f.startswith(name)]
        return near[0] if near else (prefixed[0] if len(prefixed) == 1 else None)

    def parse_known_args(self, args=None, namespace=None):
        args = _join_negative_numbers(sys.argv[1:] if args is None else list(args))
        return super().parse_known_args(args, namespace)

    def check_flags(self, args: list[str]) -> None:
        """An unknown flag is the first thing to report (before a missing argument it may have been meant for)."""
        known = set(self.flags())
        for arg in args:
            if arg == "--":
                return
            if arg.startswith("--") and arg.split("=", 1)[0] not in known:
                near = self.closest(arg)
                hint = f"did you mean {near}?" if near else f"{self.prog} --help lists the flags"
                raise UsageError(f"unknown flag {arg.split('=', 1)[0]}; {hint}")

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        self.check_flags(args)
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            raise UsageError(f"unexpected argument {extras[0]!r}; see {self.prog} --help")
        return parsed

    def error(self, message: str):
        raise UsageError(_rephrase(message, self.prog))


def _rephrase(message: str, prog: str) -> str:
    """argparse's message as ``<what>; <what to do>``."""
    message = " ".join(message.split())
    if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: invalid choice: '?(.*?)'? \(choose from (.*)\)", message):
        choices = m.group(3).replace("'", "")
        return f"{m.group(1)} {m.group(2)}: not a valid choice; choose one of {choices}"
    if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: invalid (\w+) value: (.*)", message):
        kind = {"int": "a whole number", "float": "a number"}.get(m.group(2), f"a {m.group(2)} value")
        return f"{m.group(1)} {m.group(3)}: not {kind}; give {kind}"
    if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: (.*)", message):
        where = f"{m.group(1)}: " if m.group(1).startswith("-") else ""  # a positional's name says nothing
        return f"{where}{m.group(2)}" + ("" if ";" in m.group(2) else f"; see {prog} --help")
    if m := re.fullmatch(r"the following arguments are required: (.*)", message):
        names = ", ".join(name.split("/")[0] for name in m.group(1).split(", "))
        return f"missing {names}; see {prog} --help"
    return f"{message}; see {prog} --help"


def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _unwrap_optional(kind):
    """``X | None`` -> ``X`` (and whether None was allowed)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return kind, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of the dataclass ``cls``, in a group titled by its docstring; HfArgumentParser's rules:
    ``--name`` (and ``--name-with-dashes``); a bool field takes ``--flag``, ``--flag true|false`` and, when it
    defaults to true, ``--no_flag``; a ``Literal`` field its choices; a ``list`` field one or more values."""
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().split("\n")[0])
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        kind, _ = _unwrap_optional(hints[f.name])
        options = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kwargs = {"help": f.metadata.get("help"), "dest": f.name}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        else:
            kwargs["required"] = True
        if typing.get_origin(kind) is Literal:
            kwargs.update(choices=list(typing.get_args(kind)), metavar="{" + ",".join(map(str, typing.get_args(kind))) + "}")
        elif kind is bool:
            kwargs.update(type=to_bool, nargs="?", const=True, metavar="true|false")
        elif typing.get_origin(kind) is list:
            kwargs.update(type=typing.get_args(kind)[0], nargs="+")
        else:
            kwargs.update(type=kind)
        group.add_argument(*options, **kwargs)
        if kind is bool and f.default is True:
            group.add_argument(f"--no_{f.name}", action="store_false", dest=f.name, help=f"set --{f.name} false")


def coerce(cls, values: dict, where: str) -> dict:
    """``values`` (from a YAML file) checked and converted to the types of ``cls``'s fields; an error naming the
    file, the key and the expected type."""
    hints, out = _field_types(cls), {}
    for name, value in values.items():
        kind, optional = _unwrap_optional(hints[name])
        try:
            if value is None and optional:
                out[name] = None
            elif typing.get_origin(kind) is Literal:
                if value not in typing.get_args(kind) or isinstance(value, bool):
                    choices = ", ".join(map(str, typing.get_args(kind)))
                    bare = ' (YAML reads a bare no or yes as false or true: quote it, "no")' * isinstance(value, bool)
                    raise ValueError(f"{where}: {name}: {value!r} is not one of {choices}{bare}; fix the file")
                out[name] = value
            elif kind is bool:
                out[name] = to_bool(value)
            elif typing.get_origin(kind) is list:
                item = typing.get_args(kind)[0]
                out[name] = [item(v) for v in (value if isinstance(value, list) else [value])]
            elif kind is str and isinstance(value, list):  # a YAML list for a comma-separated flag (--tags)
                out[name] = ",".join(map(str, value))
            elif kind in (int, float) and isinstance(value, bool):
                raise ValueError(f"expected a number, got {value}")
            elif kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            else:
                out[name] = kind(value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
            if str(err).startswith(where):
                raise
            raise ValueError(f"{where}: {name}: {value!r} is not a valid {getattr(kind, '__name__', kind)} "
                             f"({err}); fix the file") from None
    return out


def parse_dataclasses(classes: tuple, argv: list[str] | None, prog: str, description: str | None = None,
                      config_flag: bool = True) -> tuple:
    """Instances of ``classes`` from ``argv``; with ``config_flag``, ``--config FILE.yaml`` (or a bundled preset's
    name) gives defaults that the flags override. Every error is a one-line ``ValueError``."""
    usage = f"{prog} {'[--config FILE_OR_PRESET] ' if config_flag else ''}[--FLAG VALUE ...]"
    parser = ArgumentParser(prog=prog, description=description, usage=usage)
    if config_flag:
        parser.add_argument("--config", default=None, help="YAML file of the flags below, or the name of a bundled "
                            f"one ({', '.join(bundled_configs())}); flags given too win")
    for cls in classes:
        add_dataclass_arguments(parser, cls)
    argv = _join_negative_numbers(sys.argv[1:] if argv is None else list(argv))
    parser.check_flags(argv)
    config = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config.add_argument("--config", default=None)
    known, _ = config.parse_known_args(argv)
    if config_flag and known.config:
        values = read_yaml(resolve_config(known.config))
        parser.set_defaults(**defaults_from(classes, values, known.config, prog))
    namespace = parser.parse_args(argv)
    return tuple(cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)}) for cls in classes)


def defaults_from(classes: tuple, values: dict, where: str, prog: str) -> dict:
    """A config file's values, every key a field of one of ``classes`` (an unknown key names the closest one)."""
    fields = {f.name: cls for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields) - {"config"})
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(fields), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else f"{prog} --help lists the flags"
        raise ValueError(f"{where}: unknown key{'s' * (len(unknown) > 1)} {', '.join(unknown)}; {hint}")
    out = {}
    for cls in classes:
        mine = {k: v for k, v in values.items() if fields.get(k) is cls}
        out.update(coerce(cls, mine, where))
    return out


def from_mapping(cls, values: dict, where: str, prog: str):
    """An instance of ``cls`` from a mapping (a YAML or JSON file of flags), checked like the command line."""
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}; add {'them' if len(missing) > 1 else 'it'}")
    return cls(**defaults_from((cls,), values, where, prog))


_HUB_ID = re.compile(r"(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}")


def could_be_hub_id(name: str) -> bool:
    """Whether ``name`` has the shape of a Hub repo id (``gpt2``, ``USER/NAME``) rather than of a local path."""
    return bool(_HUB_ID.fullmatch(name)) and not name.startswith((".", "~")) and ".." not in name and "--" not in name


def model_folder(name: str) -> str:
    """An argparse type: a local model folder, which must exist."""
    if not Path(name).expanduser().is_dir():
        what = "is a file, not a model folder" if Path(name).expanduser().exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{name} {what}; pass a checkpoint or model folder")
    return name


def model_source(name: str) -> str:
    """An argparse type: a local model folder, or a Hub id such as ``gpt2``; a path that does not exist (and cannot
    be a Hub id) is refused at once, before anything is loaded."""
    if Path(name).expanduser().exists() or could_be_hub_id(name):
        return name
    raise argparse.ArgumentTypeError(f"{name} does not exist; pass a checkpoint or model folder, or a Hub id such "
                                     "as gpt2")


VERIFY_HELP = ("check every file's sha256 (default: sizes always, contents the first time a folder is read as it is "
               "now)")


def add_model_args(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """Add the model flags the commands share: the model (``--model`` or positional), ``--trust_remote_code``,
    ``--dtype`` and ``--device``."""
    help_model = "checkpoint folder or hub id, loaded with AutoModelForCausalLM.from_pretrained"
    if positional:
        parser.add_argument("model", metavar="CHECKPOINT", type=model_source, help=help_model)
    else:
        parser.add_argument("--model", required=True, type=model_source, help=help_model)
    parser.add_argument("--trust_remote_code", action="store_true", help="allow modeling code saved with the model")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="weight dtype (default: fp32)")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cuda if available, else cpu)")
    parser.add_argument("--verify", action="store_true", help=VERIFY_HELP)



def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainArguments]:
    """The three argument dataclasses from ``--config FILE.yaml`` and flags; a flag wins over the file."""
    return parse_dataclasses((ModelArguments, DataArguments, TrainArguments), argv, prog="minigpt train")


CONFIGS_DIR = Path(__file__).parent / "configs"  # the repository's configs/, installed with the package


def bundled_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def resolve_config(name: str) -> str:
    """A config file's path: ``name`` itself if it is a file, else the bundled ``configs/{name}.yaml``; an error that
    lists the bundled ones otherwise."""
    path, bundled = Path(name), bundled_configs()
    if path.exists() and not path.is_dir():  # a file (or a pipe: --config <(...))
        return name
    if os.sep not in name and path.stem in bundled:
        return str(CONFIGS_DIR / f"{path.stem}.yaml")
    near = difflib.get_close_matches(path.stem, bundled, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}? " if near else ""
    what = "is a folder" if path.is_dir() else "is neither a file nor a bundled config"
    raise ValueError(f"--config {name} {what}; {hint}give a YAML file or one of {', '.join(bundled)}")


def read_yaml(path: str) -> dict:
    """A YAML mapping; errors name the file (and the line) and what is expected."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else path
        raise ValueError(f"{where}: invalid YAML ({getattr(err, 'problem', None) or err}); fix the file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of flag names to values")
    return values
