"""What ``scripts/train.py`` composes: its arguments, the LR schedule, batch arithmetic, MFU and checkpoints.

The training loop itself lives in ``scripts/train.py`` (like build-nanogpt's ``train_gpt2.py``); everything here is
a plain function or dataclass that the loop calls and the tests check on their own.

Checkpoint layout (one folder per save, written under a temporary name and renamed when complete)::

    {output_dir}/checkpoints/step_000300/
        config.json, generation_config.json, model.safetensors, tokenizer files, modeling code
                                  -- a complete ``save_pretrained`` folder: AutoModelForCausalLM.from_pretrained(it)
        trainer_state.json        -- step, world size, arguments, config hash, every rank's data loader position
        training_state/           -- accelerator.save_state: optimizer.bin, scaler.pt (fp16), random_states_{rank}.pkl
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml
from transformers import HfArgumentParser

from .configuration_minigpt import PRESETS
from .hub import redact
from .saving import atomic_directory

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_STATE_DIR = "training_state"
SAMPLE_PROMPT = "Hello, I'm a language model,"

# Dense 16-bit tensor-core peaks (FLOP/s) by a substring of torch.cuda.get_device_name(). MFU is always measured
# against these, as nanoGPT does, also for fp32 runs (which use TF32 at about half this peak).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "T4": 65e12}

# The config fields that fix the shape of the weights; a checkpoint resumes only into the same values.
ARCHITECTURE_FIELDS = ("vocab_size", "tokenizer_vocab_size", "block_size", "n_layer", "n_head", "n_embd",
                       "mlp_ratio", "bias", "tie_word_embeddings")


# ----------------------------------------------------------------------------------------------------------------------
# arguments


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
                          "shards: --data_dir must already hold shards (python scripts/prepare_data.py)"},
    )
    micro_batch_size: int = field(default=64, metadata={"help": "B: rows per forward pass, per process"})
    seq_len: int = field(default=1024, metadata={"help": "T: tokens per row"})


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
        if not 0 <= self.min_lr <= self.max_lr:
            raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr {self.min_lr}, max_lr {self.max_lr}")
        if self.warmup_steps is None and not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"--warmup_ratio {self.warmup_ratio}: must be in [0, 1)")
        if self.num_warmup_steps() < 0:
            raise ValueError(f"--warmup_steps {self.warmup_steps}: must be at least 0")

    def num_warmup_steps(self) -> int:
        """``warmup_steps`` if given, else ``warmup_ratio * max_steps`` rounded."""
        return self.warmup_steps if self.warmup_steps is not None else round(self.warmup_ratio * self.max_steps)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainArguments]:
    """The three argument dataclasses from ``--config FILE.yaml`` and flags; a flag wins over the file."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainArguments))
    parser.add_argument("--config", default=None, help="YAML file of the flags below; flags given too win")
    known, _ = parser.parse_known_args(argv)
    if known.config:
        with open(known.config, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{known.config}: expected a mapping of flag names to values")
        unknown = sorted(set(values) - {action.dest for action in parser._actions} - {"config"})
        if unknown:
            raise ValueError(f"{known.config}: unknown keys {', '.join(unknown)}")
        parser.set_defaults(**values)
    model_args, data_args, train_args = parser.parse_args_into_dataclasses(argv)[:3]
    return model_args, data_args, train_args


def flat_config(args: tuple) -> dict:
    """The argument dataclasses as one flat dict, for TensorBoard's hparams (which takes no None)."""
    return redact({k: "none" if v is None else v for a in args for k, v in dataclasses.asdict(a).items()})


# ----------------------------------------------------------------------------------------------------------------------
# schedule, batch arithmetic, FLOPs


def get_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """build-nanogpt's schedule: linear warmup to `max_lr` over `warmup_steps` (step 0 already gets
    ``max_lr / warmup_steps``), then cosine decay reaching `min_lr` exactly at the last step, ``max_steps - 1``."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps - 1:
        return min_lr
    decay_ratio = (step - warmup_steps) / (max_steps - 1 - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (max_lr - min_lr)


def grad_accum_steps(total_batch_size: int, micro_batch_size: int, seq_len: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that one step sees `total_batch_size` tokens; a ValueError if it can't."""
    per_micro_step = micro_batch_size * seq_len * world_size
    if total_batch_size % per_micro_step:
        raise ValueError(
            f"total_batch_size {total_batch_size:,} is not a multiple of micro_batch_size * seq_len * processes = "
            f"{micro_batch_size} * {seq_len} * {world_size} = {per_micro_step:,}; change --total_batch_size or "
            "--micro_batch_size")
    return total_batch_size // per_micro_step


def flops_per_token(model, seq_len: int) -> int:
    """Training FLOPs per token, PaLM appendix B: ``6N + 12 L H Q T``.

    ``N`` counts every parameter except the position embedding (nanoGPT's convention): the token embedding stays in
    because, tied to the LM head, it is a real matmul with every token. ``L, H, Q`` are layers, heads and head size,
    ``T`` the sequence length (the attention term). Gradient-checkpointing recompute is not counted (model FLOPs).
    """
    config = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * config.n_layer * config.n_head * config.head_dim * seq_len


def peak_flops_per_device(device: torch.device, override: float | None = None) -> float | None:
    """`override`, else the peak of a known GPU (``PEAK_FLOPS``), else None (then MFU is not logged)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


# ----------------------------------------------------------------------------------------------------------------------
# mixed precision


def enable_cpu_fp16(accelerator) -> None:
    """Make ``Accelerator(mixed_precision="fp16")`` real on CPU: fp16 autocast plus a dynamic loss scaler.

    Accelerate 1.15 turns fp16 on only for accelerators; on CPU it keeps ``mixed_precision="fp16"`` but silently
    runs fp32 with no scaler. torch has both pieces for CPU (``torch.autocast("cpu", torch.float16)``,
    ``torch.amp.GradScaler("cpu")``), so this sets the two attributes Accelerate's own fp16 path reads; call it
    before ``prepare``. From then on ``prepare`` wraps the forward in autocast, ``backward`` scales the loss,
    ``clip_grad_norm_`` unscales, the prepared optimizer steps through the scaler and ``save_state`` saves it.
    fp16 matmuls are slow on most CPUs: this is for tests and checks, not for speed.
    """
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu" and accelerator.scaler is None:
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu")


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints


def config_hash(config) -> str:
    """A short hash of the architecture fields of a model config (see ``ARCHITECTURE_FIELDS``)."""
    values = {name: getattr(config, name) for name in ARCHITECTURE_FIELDS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the finished checkpoints in ``{output_dir}/checkpoints``, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    found = [(int(m.group(1)), path) for path in root.glob("step_*")
             if (m := re.fullmatch(r"step_(\d+)", path.name)) and (path / TRAINER_STATE_NAME).is_file()]
    return sorted(found)


def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step_{step:06d}"


def resolve_checkpoint(spec: str | None, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: None for a fresh run, ``latest`` = the newest in output_dir (None if there is
    none), or a folder, which must hold a trainer_state.json."""
    if spec is None:
        return None
    if spec == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = Path(spec)
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(f"--resume_from_checkpoint {spec}: not a checkpoint folder (no {TRAINER_STATE_NAME})")
    return path


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    return json.loads((Path(checkpoint) / TRAINER_STATE_NAME).read_text(encoding="utf-8"))


def check_resumable(state: dict, checkpoint: Path, world_size: int, config, total_batch_size: int) -> None:
    """A ValueError naming what differs when this run cannot continue `checkpoint` exactly."""
    if state["world_size"] != world_size:
        raise ValueError(
            f"{checkpoint} was saved by {state['world_size']} processes, this run has {world_size}: resume with "
            f"--num_processes {state['world_size']} (data positions and RNG states are per process)")
    if state["config_hash"] != config_hash(config):
        saved = state["model_config"]
        differ = [f"{k} {saved.get(k)} (now {getattr(config, k)})" for k in ARCHITECTURE_FIELDS
                  if saved.get(k) != getattr(config, k)]
        raise ValueError(f"{checkpoint} holds a different model: {', '.join(differ)}; use the same --preset and "
                         "overrides as the run that saved it")
    if state["args"]["train"]["total_batch_size"] != total_batch_size:
        raise ValueError(f"{checkpoint} was trained with total_batch_size "
                         f"{state['args']['train']['total_batch_size']:,}, this run asks {total_batch_size:,}")


def check_no_later_checkpoints(output_dir: str | os.PathLike, start_step: int) -> None:
    """Refuse to start where this run would have to overwrite a finished checkpoint."""
    later = [path for step, path in list_checkpoints(output_dir) if step > start_step]
    if later:
        hint = ("pass --resume_from_checkpoint latest or choose another --output_dir" if start_step == 0 else
                "resume from the newest one, or choose another --output_dir")
        raise FileExistsError(f"{Path(output_dir) / CHECKPOINTS_DIR} already holds {later[-1].name}, which this run "
                              f"would overwrite; {hint}")


def skip_model_in_training_state(accelerator) -> None:
    """Keep the weights out of ``training_state/``: they are in the checkpoint's ``model.safetensors`` already, and
    a resumed run is built from there. (Under FSDP Accelerate saves its shards regardless.)"""
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())


def save_checkpoint(accelerator, model, tokenizer, path: Path, state: dict, loader_state: dict) -> None:
    """Write one checkpoint folder from every process (a collective: all ranks call it).

    The main process opens the folder under a temporary name; every rank writes into it (``save_state``: optimizer
    and scaler from the main process, one RNG file per rank) and sends it its loader position; after a barrier the
    main process writes the model and trainer_state.json, and the folder is renamed into place. An existing `path`
    is never overwritten.
    """
    from accelerate.utils import broadcast_object_list, gather_object

    loader_states = gather_object([loader_state])
    state_dict = accelerator.get_state_dict(model)  # a collective under FSDP; on the others a plain state_dict
    main = accelerator.is_main_process
    with atomic_directory(path) if main else contextlib.nullcontext() as tmp:
        tmp = Path(broadcast_object_list([str(tmp) if main else None])[0])
        accelerator.save_state(str(tmp / TRAINING_STATE_DIR))
        accelerator.wait_for_everyone()
        if main:
            # torch.compile names parameters "_orig_mod.<name>"; the saved model uses the plain names
            state_dict = {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}
            raw_model = accelerator.unwrap_model(model, keep_torch_compile=False)
            raw_model.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            (tmp / TRAINER_STATE_NAME).write_text(json.dumps({**state, "loader_states": loader_states}, indent=2))
    accelerator.wait_for_everyone()


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (0 keeps all); return the deleted folders."""
    checkpoints = list_checkpoints(output_dir)
    doomed = [path for _, path in checkpoints[:-keep_last]] if keep_last > 0 else []
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def trainer_state(step: int, world_size: int, grad_accum: int, skipped_steps: int, config, args: tuple) -> dict:
    """The JSON-able part of the training state (the loader positions are added by ``save_checkpoint``)."""
    model_args, data_args, train_args = args
    return {
        "step": step,
        "world_size": world_size,
        "grad_accum_steps": grad_accum,
        "tokens_seen": step * train_args.total_batch_size,
        "skipped_steps": skipped_steps,
        "config_hash": config_hash(config),
        "model_config": {name: getattr(config, name) for name in ARCHITECTURE_FIELDS + ("dropout",)},
        "args": redact({"model": dataclasses.asdict(model_args), "data": dataclasses.asdict(data_args),
                        "train": dataclasses.asdict(train_args)}),
    }
