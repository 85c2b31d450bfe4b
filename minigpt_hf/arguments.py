"""The arguments of a training run: three dataclasses (model, data, recipe), their YAML presets, and the parser.

``minigpt train --help`` lists every field. Values come from ``--config FILE.yaml`` (or the name of a preset shipped
in ``configs/``) and from flags; a flag wins over the file. Nothing here imports torch or transformers' models, so
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser

from .presets import PRESETS

SAMPLE_PROMPT = "Hello, I'm a language model,"


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
    seed: int = field(default=1337)
    log_every: int = field(default=1, metadata={"help": "log the training metrics every N steps"})
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


_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _join_negative_numbers(argv: list[str]) -> list[str]:
    """``--max_lr -1e-3`` as ``--max_lr=-1e-3``: argparse takes ``-1e-3`` for an option, not a value."""
    out = []
    for arg in argv:
        if out and _NUMBER.fullmatch(arg) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainArguments]:
    """The three argument dataclasses from ``--config FILE.yaml`` and flags; a flag wins over the file."""
    argv = _join_negative_numbers(sys.argv[1:] if argv is None else list(argv))
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainArguments), prog="minigpt train")
    parser.add_argument("--config", default=None, help="YAML file of the flags below, or the name of a bundled one "
                        f"({', '.join(bundled_configs())}); flags given too win")
    known, _ = parser.parse_known_args(argv)
    if known.config:
        values = read_yaml(resolve_config(known.config))
        unknown = sorted(set(values) - {action.dest for action in parser._actions} - {"config"})
        if unknown:
            raise ValueError(f"{known.config}: unknown keys {', '.join(unknown)}; see minigpt train --help")
        parser.set_defaults(**values)
    model_args, data_args, train_args = parser.parse_args_into_dataclasses(argv)[:3]
    return model_args, data_args, train_args


CONFIGS_DIR = Path(__file__).parent / "configs"  # the repository's configs/, installed with the package


def bundled_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def resolve_config(name: str) -> str:
    """A config file's path: ``name`` itself if it exists, else the bundled ``configs/{name}.yaml``."""
    if Path(name).exists() or not (CONFIGS_DIR / f"{Path(name).stem}.yaml").is_file() or os.sep in name:
        return name
    return str(CONFIGS_DIR / f"{Path(name).stem}.yaml")


def read_yaml(path: str) -> dict:
    """A YAML mapping; errors name the file (and the line) and what is expected."""
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
