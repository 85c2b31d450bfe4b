"""The training run: the LR schedule, and the loop itself (``setup`` -> ``fit``), callable from Python.

    from minigpt_hf.training import parse_args, train
    train(*parse_args(["--config", "configs/tiny.yaml"]))

``minigpt train`` and ``accelerate launch scripts/train.py`` call exactly this. The loop follows build-nanogpt's
``train_gpt2.py``; every optimisation is one visible line: TF32 matmuls, autocast (bf16, or fp16 with dynamic loss
scaling), torch.compile, SDPA flash attention (in the model), fused AdamW on CUDA, gradient accumulation to
``total_batch_size`` tokens with one all-reduce per optimizer step, clipping at 1.0 and a cosine LR set from the step
number. At step s the model has taken s optimizer steps: validation, samples and checkpoints at step s describe that
model, and the training loss logged at step s is that of update s. The run folder is :mod:`minigpt_hf.checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .arguments import DataArguments, ModelArguments, TrainArguments, parse_args  # noqa: F401 (the public API)
from .checkpoint import redact
from .distributed import check_machines_agree, process_group_kwargs, report_lost_peer
from .signals import StartupStopped, StopOnSignal, say_stopped_at_startup

# Dense 16-bit tensor-core peaks (FLOP/s) by a substring of torch.cuda.get_device_name(). MFU is always measured
# against these, as nanoGPT does, also for fp32 runs (which use TF32 at about half this peak).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "T4": 65e12}

# The config fields that fix the shape of the weights; a checkpoint resumes only into the same values.
ARCHITECTURE_FIELDS = ("vocab_size", "tokenizer_vocab_size", "block_size", "n_layer", "n_head", "n_embd",
                       "mlp_ratio", "bias", "tie_word_embeddings")
# What a resumed run must share with its checkpoint unless --allow_recipe_change (then the changes are logged).
RECIPE_FIELDS = ("max_steps", "max_lr", "min_lr", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                 "grad_clip", "mixed_precision", "seed", "total_batch_size")


def flat_config(args: tuple) -> dict:
    """The argument dataclasses as one flat dict, for TensorBoard's hparams (which takes no None)."""
    return redact({k: "none" if v is None else v for a in args for k, v in dataclasses.asdict(a).items()})


def recipe(train_args, data_args, manifest_hash: str) -> dict:
    """What a resumed run must share with its checkpoint: the optimisation recipe and the data it reads."""
    values = {name: getattr(train_args, name) for name in RECIPE_FIELDS}
    values.update(warmup_steps=train_args.num_warmup_steps(), seq_len=data_args.seq_len, data=manifest_hash)
    return values


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


def enable_cpu_fsdp(accelerator) -> None:
    """Make ``accelerate launch --use_fsdp`` (or an FSDP config) real on CPU processes: FSDP2 over gloo.

    With ``ACCELERATE_USE_CPU=1`` Accelerate 1.15 builds the FSDP plugin from the launcher's ``FSDP_*`` variables but
    switches to FSDP only on accelerators: on CPU it keeps ``MULTI_CPU`` and silently wraps the model in DDP. torch's
    ``fully_shard`` works on CPU with gloo, so this sets what ``AcceleratorState`` sets on GPUs (the plugin, and the
    distributed type in both shared states: a later ``AcceleratorState()`` copies ``PartialState``'s over its own);
    call it before ``prepare``.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
            and accelerator.distributed_type == DistributedType.MULTI_CPU):
        plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* environment, as Accelerator() builds it
        if accelerator.mixed_precision != "no":
            plugin.set_mixed_precision(accelerator.mixed_precision)
        accelerator.state.fsdp_plugin = plugin
        accelerator.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


# ----------------------------------------------------------------------------------------------------------------------
# the pieces of a step


def build_model(model_args):
    """A fresh model of the preset (with overrides), or the weights of ``--init_from``."""
    from .configuration_minigpt import MiniGPTConfig
    from .modeling_minigpt import MiniGPTForCausalLM

    if model_args.init_from is None:
        return MiniGPTForCausalLM(MiniGPTConfig.from_preset(model_args.preset, **model_args.overrides()))
    config_file = Path(model_args.init_from) / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "minigpt":
        ckpt.verify_folder(model_args.init_from)
        return MiniGPTForCausalLM.from_pretrained(model_args.init_from, dtype=torch.float32)
    vocab_size = MiniGPTConfig.from_preset(model_args.preset).vocab_size  # 50304: GPT-2's vocabulary padded
    return MiniGPTForCausalLM.from_gpt2(model_args.init_from, vocab_size=vocab_size)


def train_step(model, optimizer, loader, accelerator, grad_accum: int, lr: float, grad_clip: float):
    """One optimizer step over `grad_accum` micro-batches; returns (mean loss, grad norm, skipped) with no host sync
    before the step (the loss stays a tensor; fp16's overflow check is the scaler's own sync)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_accum = torch.zeros((), device=accelerator.device)
    for _ in range(grad_accum):
        x, y = loader.next_batch()
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        # accumulate(): DDP all-reduces only on the last micro-step; backward() divides the loss by grad_accum
        with accelerator.accumulate(model):
            loss = model(x, shift_labels=y, return_logits=False).loss  # loss only: one (B, T, V) buffer fewer
            loss_accum += loss.detach() / grad_accum
            accelerator.backward(loss)
    norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)  # unscales fp16 gradients first
    scale = accelerator.scaler.get_scale() if accelerator.scaler is not None else None
    optimizer.step()  # through the GradScaler under fp16: skipped if any gradient is inf/nan
    optimizer.zero_grad(set_to_none=True)
    # A skipped step is one where the scaler backed off. (accelerator.optimizer_step_was_skipped misses it with fused
    # AdamW: the GradScaler then always calls step() and lets the fused kernel skip the update.)
    skipped = scale is not None and accelerator.scaler.get_scale() < scale
    return loss_accum, norm, skipped


@torch.no_grad()
def evaluate(model, loader, accelerator, steps: int) -> tuple[float, float]:
    """Mean loss over `steps` validation batches per process, averaged over all processes, and the bits per byte of
    the same targets over all processes (:mod:`minigpt_hf.evaluation.loss` defines it)."""
    from .evaluation.loss import bits_per_byte, nats_and_bytes

    model.eval()
    loader.reset()
    sums = 0  # nats, nats of the targets with bytes, bytes: one tensor, no host sync until the reduce
    for _ in range(steps):
        x, y = loader.next_batch()
        per_row = nats_and_bytes(model(x.to(accelerator.device)).logits, y)
        sums = sums + torch.stack([t.sum().to(per_row[0].dtype) for t in per_row])
    model.train()
    nats, counted, n_bytes = accelerator.reduce(sums, reduction="sum").tolist()
    return nats / (accelerator.num_processes * steps * y.numel()), bits_per_byte(counted, n_bytes)


@torch.no_grad()
def generate_samples(model, tokenizer, accelerator, train_args) -> list[str]:
    """``num_samples`` top-k continuations of the prompt from the unwrapped, uncompiled model, seeded per rank as in
    build-nanogpt; the global RNG is forked so that sampling leaves training's random stream untouched."""
    from accelerate.utils import DistributedType

    from .tokenization import EOT_ID

    raw_model = accelerator.unwrap_model(model, keep_torch_compile=False)
    ids = tokenizer(train_args.sample_prompt, return_tensors="pt").input_ids.to(accelerator.device)
    ids = ids.repeat(train_args.num_samples, 1)
    raw_model.eval()
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(42 + accelerator.process_index)
        out = raw_model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=train_args.sample_top_k,
            max_length=train_args.sample_max_length, pad_token_id=EOT_ID,
            synced_gpus=accelerator.distributed_type == DistributedType.FSDP,  # sharded weights: ranks step together
        )
    raw_model.train()
    return tokenizer.batch_decode(out, skip_special_tokens=True)


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints of the run


def skip_model_in_training_state(accelerator) -> None:
    """Keep the weights out of ``training_state/``: they are in the checkpoint's ``model.safetensors`` already, and
    a resumed run is built from there. (Under FSDP Accelerate saves its shards regardless.)"""
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())


def save_checkpoint(accelerator, model, tokenizer, path: Path, state: dict) -> None:
    """Write one checkpoint folder from every process (a collective: all ranks call it).

    The main process opens the folder under a temporary name; every rank writes into it (``save_state``: optimizer
    and scaler from the main process, one RNG file per rank); then the main process writes the model,
    trainer_state.json and the ``COMPLETE`` marker with every file's sha256 (computed as the files are written, the
    other ranks' sent over), and the folder is fsynced and renamed into place. An existing `path` is never
    overwritten. A disk error on any rank is one :class:`~minigpt_hf.checkpoint.WriteError` naming the file, raised
    on every rank; the temporary folder is removed and the finished checkpoints stay as they were.
    """
    import contextlib

    from accelerate.utils import broadcast_object_list, gather_object

    state_dict = accelerator.get_state_dict(model)  # a collective under FSDP; on the others a plain state_dict
    main = accelerator.is_main_process

    def everyone(value) -> list:  # every rank's value, on every rank
        return gather_object([value]) if accelerator.num_processes > 1 else [value]

    def raise_any(error: ckpt.WriteError | None) -> None:  # the first rank's failure, raised on every rank
        failure = next((f for f in everyone((str(error.path), error.errno) if error else None) if f), None)
        if failure:
            raise ckpt.WriteError(*failure)

    try:
        with ckpt.atomic_directory(path) if main else contextlib.nullcontext() as tmp:
            tmp = Path(broadcast_object_list([str(tmp) if main else None])[0])
            error, written = None, {}
            try:
                with ckpt.recording(tmp, path) as rec:
                    accelerator.save_state(str(tmp / ckpt.TRAINING_STATE_DIR))
                written = rec.files
            except ckpt.WriteError as err:
                error = err
            written = everyone(written)
            raise_any(error)
            if main:
                try:
                    with ckpt.recording(tmp, path) as rec:
                        # torch.compile names parameters "_orig_mod.<name>"; the saved model uses the plain names
                        state_dict = {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}
                        raw_model = accelerator.unwrap_model(model, keep_torch_compile=False)
                        if raw_model.config.tie_word_embeddings:  # FSDP gathers lm_head.weight as a copy: saved once
                            for tied in raw_model._tied_weights_keys or {}:
                                state_dict.pop(tied, None)
                        raw_model.save_pretrained(tmp, state_dict=state_dict)
                        tokenizer.save_pretrained(tmp)
                        ckpt.write_trainer_state(tmp, state)
                        hashes = {name: h for files in written + [rec.files] for name, h in files.items()}
                        ckpt.mark_complete(tmp, {"step": state["step"]}, hashes)
                except ckpt.WriteError as err:
                    error = err
            raise_any(error)
    except ckpt.WriteError as err:
        raise err.reworded(detail=f"checkpoint {path.name} is discarded, the finished ones are intact",
                           then="then resume with --resume_from_checkpoint latest") from None
    accelerator.wait_for_everyone()


def architecture(config) -> dict:
    return {name: getattr(config, name) for name in ARCHITECTURE_FIELDS}


def cpu_threads(device, train_args, state: dict | None, checkpoint: Path | None) -> str | None:
    """Set the intra-op thread count of a CPU run: --cpu_threads, else a resumed run's checkpoint's, else PyTorch's.
    On CPU the float reductions (the gradient norm, the backward's sums) are split by thread, so a process with
    another count computes other last bits and drifts: a resume on another machine, under another OMP_NUM_THREADS or
    a scheduler's cpuset would not be exact. (Setting it also turns MKL's own choice of threads off.) Returns the
    line a resume logs when it takes a count other than this process's, or None."""
    if device.type != "cpu":
        return None
    default, saved = torch.get_num_threads(), (state or {}).get("cpu_threads")
    if state and state.get("world_size") != int(os.environ.get("WORLD_SIZE", "1")):
        saved = None  # an elastic resume (another number of processes) is not bit-exact anyway: the launch's count
    threads = train_args.cpu_threads or saved or default
    if saved and threads != saved and not train_args.allow_recipe_change:
        raise ValueError(f"{checkpoint} was trained with --cpu_threads {saved} and this run asks for {threads}: on "
                         f"CPU the float sums split by thread, so it would not continue exactly; leave out "
                         "--cpu_threads (the checkpoint's count is the default), or pass --allow_recipe_change")
    torch.set_num_threads(threads)
    if saved and threads == saved != default:
        return (f"{saved} CPU thread{'s' if saved > 1 else ''} per process, as the checkpoint's run had (this process "
                f"had {default}): the same count keeps the resume exact (--cpu_threads to choose)")
    if saved and threads != saved:
        return f"recipe change on resume (--allow_recipe_change): cpu_threads {saved} -> {threads}"
    return None


def check_resumable(state: dict, checkpoint: Path, config, run_recipe: dict, allow_change: bool) -> list[str]:
    """The recipe changes this resume makes (logged), or a ValueError naming what differs when it cannot go on."""
    if state["config_hash"] != ckpt.config_hash(architecture(config)):
        saved = state["model_config"]
        differ = [f"{k} {saved.get(k)} (now {getattr(config, k)})" for k in ARCHITECTURE_FIELDS
                  if saved.get(k) != getattr(config, k)]
        raise ValueError(f"{checkpoint} holds a different model: {', '.join(differ)}; use the same --preset and "
                         "overrides as the run that saved it")
    saved = state.get("recipe", {})
    changes = [f"{k} {saved.get(k)} -> {v}" for k, v in run_recipe.items() if k in saved and saved[k] != v]
    if changes and not allow_change:
        raise ValueError(f"{checkpoint} was trained with another recipe: {'; '.join(changes)}; resume with the same "
                         "arguments, or pass --allow_recipe_change to continue with these")
    return changes


def load_training_state(accelerator, checkpoint: Path, state: dict, seed: int) -> str | None:
    """Optimizer, scaler and RNG of ``checkpoint``; with another world size (elastic resume), every rank's RNG is
    re-seeded from (seed, step, rank) instead, and a line saying so is returned."""
    from accelerate.utils import DistributedType, set_seed

    folder = checkpoint / ckpt.TRAINING_STATE_DIR
    rank, world_size = accelerator.process_index, accelerator.num_processes
    # Accelerate writes the optimizer as optimizer.bin, under FSDP as optimizer_0/ (sharded) or optimizer_0.bin
    saved_fsdp, fsdp = any(folder.glob("optimizer_0*")), accelerator.distributed_type == DistributedType.FSDP
    if saved_fsdp != fsdp:
        how = ("with FSDP (a sharded optimizer state)", "without FSDP") if saved_fsdp else (
            "without FSDP", "with FSDP")
        raise ValueError(f"{checkpoint} was saved by a run {how[0]}; this run is launched {how[1]}: resume it with "
                         "the same kind of launch (accelerate_configs/README.md)")
    elastic = state["world_size"] != world_size
    rng_file = folder / f"random_states_{rank}.pkl"
    if not elastic and not rng_file.is_file():
        raise FileNotFoundError(f"{rng_file} is missing: rank {rank} cannot resume its random state; resume from "
                                "another checkpoint")
    accelerator.load_state(str(folder))
    if elastic:
        set_seed(seed + 1000 * state["step"] + rank)
        return (f"elastic resume: {state['world_size']} -> {world_size} processes; the data continues from the same "
                "token, random states re-seeded from (seed, step, rank)")
    return None


# ----------------------------------------------------------------------------------------------------------------------
# setup -> fit


@dataclass
class Run:
    """Everything :func:`fit` needs, built by :func:`setup`."""

    args: tuple
    accelerator: object
    model: object
    optimizer: object
    tokenizer: object
    train_loader: object
    val_loader: object
    hellaswag: list | None
    start_step: int
    grad_accum: int
    skipped_steps: int
    recipe: dict
    flops: int
    peak: float | None
    lock: ckpt.FolderLock | None
    pusher: object = None
    step: int = 0  # where fit is (the line of a lost peer names it)

    @property
    def sharded(self) -> bool:
        """Whether the weights are sharded over the processes (FSDP): then every rank takes part in generate."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.FSDP

    def log(self, message: str) -> None:
        """A line on stdout and in log.txt, from the main process."""
        if self.accelerator.is_main_process:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)
            with (Path(self.args[2].output_dir) / ckpt.LOG_NAME).open("a", encoding="utf-8") as f:
                f.write(message + "\n")


def _take_run_folder(accelerator, output_dir: str) -> tuple[ckpt.FolderLock | None, list[Path]]:
    """The main process locks ``output_dir`` and sweeps its leftovers; every rank learns whether that worked."""
    from accelerate.utils import broadcast_object_list

    lock, error, swept = None, None, []
    if accelerator.is_main_process:
        try:
            lock = ckpt.FolderLock(output_dir, "train").acquire()
            swept = ckpt.sweep(output_dir)
        except (OSError, RuntimeError) as err:
            error = f"{type(err).__name__}: {err}"
    error = broadcast_object_list([error])[0]
    if error:
        kind, message = error.split(": ", 1)
        raise (NotADirectoryError if kind == "NotADirectoryError" else ckpt.FolderLockedError)(message)
    return lock, swept


def _resolve_checkpoint(accelerator, train_args) -> tuple[Path | None, list[str]]:
    """The main process finds and verifies the checkpoint to resume from (every file's sha256; ``latest`` passes
    over damaged ones, see :func:`minigpt_hf.checkpoint.resolve_checkpoint`); every rank gets its answer or error."""
    from accelerate.utils import broadcast_object_list

    answer = None
    if accelerator.is_main_process:
        skipped = []
        try:
            found = ckpt.resolve_checkpoint(train_args.resume_from_checkpoint, train_args.output_dir, skipped)
            answer = (str(found) if found else None, skipped, None)
        except (OSError, ValueError) as err:
            answer = (None, skipped, f"{type(err).__name__}: {err}")
    found, skipped, error = broadcast_object_list([answer])[0]
    if error:
        kind, message = error.split(": ", 1)
        raise (FileNotFoundError if kind == "FileNotFoundError" else ckpt.IncompleteCheckpointError)(message)
    return (Path(found) if found else None), skipped


def setup(model_args, data_args, train_args) -> Run:
    """The accelerator, the run folder (locked), data, model, optimizer, and the state of a resumed run."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .data import DistributedTokenLoader, ensure_embedded_shards, manifest_hash, read_manifest
    from .modeling_minigpt import MiniGPTForCausalLM
    from .tokenization import get_tokenizer
    from .trackers import build_trackers, start_trackers

    args = (model_args, data_args, train_args)
    B, T = data_args.micro_batch_size, data_args.seq_len
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer
    accelerator = Accelerator(
        mixed_precision=train_args.mixed_precision,
        dynamo_backend="inductor" if train_args.compile else "no",
        log_with=build_trackers(train_args.report_to, train_args.output_dir, train_args.project, train_args.run_name,
                                train_args.tags),
        project_dir=train_args.output_dir,
        kwargs_handlers=[process_group_kwargs(train_args.ddp_timeout)],  # bounds every collective (a lost peer)
    )
    enable_cpu_fp16(accelerator)
    enable_cpu_fsdp(accelerator)
    rank, world_size, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world_size:
        raise ValueError(f"{launched} processes were launched but Accelerate runs {world_size}: without a GPU, "
                         "launch with ACCELERATE_USE_CPU=1 (see accelerate_configs/README.md)")
    grad_accum = grad_accum_steps(train_args.total_batch_size, B, T, world_size)
    accelerator.gradient_accumulation_steps = grad_accum
    lock, swept = _take_run_folder(accelerator, train_args.output_dir)
    try:
        checkpoint, skipped = _resolve_checkpoint(accelerator, train_args)
        state = ckpt.read_trainer_state(checkpoint) if checkpoint else None
        start_step = state["step"] if state else 0
        later = [path for step, path in ckpt.list_checkpoints(train_args.output_dir) if step > start_step]
        if later:
            hint = ("pass --resume_from_checkpoint latest or choose another --output_dir" if start_step == 0 else
                    "resume from the newest one, or choose another --output_dir")
            raise FileExistsError(f"{later[-1].parent} already holds {later[-1].name}, which this run would "
                                  f"overwrite; {hint}")

        # data: the embedded corpus is prepared on first use, by each node's first process while the others wait (a
        # node-local --data_dir is prepared on every node; a shared one once, the others wait for its lock)
        if data_args.data_source == "embedded" and accelerator.is_local_main_process:
            ensure_embedded_shards(data_args.data_dir)
        accelerator.wait_for_everyone()
        check_machines_agree(accelerator, train_args.output_dir, data_args.data_dir)  # one folder, the same data
        read_manifest(data_args.data_dir)  # a clear error when --data_source shards has nothing there
        train_loader = DistributedTokenLoader(data_args.data_dir, "train", B, T, rank, world_size,
                                              grad_accum=grad_accum)
        val_loader = DistributedTokenLoader(data_args.data_dir, "val", B, T, rank, world_size)
        run_recipe = recipe(train_args, data_args, manifest_hash(data_args.data_dir))
        hellaswag = None
        if train_args.hellaswag_path:
            from .evaluation.hellaswag import load_hellaswag

            hellaswag = load_hellaswag(train_args.hellaswag_path)

        # model and optimizer
        threads_line = cpu_threads(device, train_args, state, checkpoint)
        set_seed(train_args.seed)
        model = build_model(model_args)
        model.config.loss_chunk_size = model_args.loss_chunk_size  # a training-time memory lever, not architecture
        if T > model.config.block_size:
            raise ValueError(f"--seq_len {T} is longer than the model's block_size {model.config.block_size}")
        changes = []
        if state:
            changes = check_resumable(state, checkpoint, model.config, run_recipe, train_args.allow_recipe_change)
            model = MiniGPTForCausalLM.from_pretrained(checkpoint, config=model.config, dtype=torch.float32)
        if train_args.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()  # from_pretrained returns eval mode: without this a resumed run would drop dropout
        optimizer = torch.optim.AdamW(
            model.optimizer_groups(train_args.weight_decay), lr=train_args.max_lr,
            betas=(train_args.adam_beta1, train_args.adam_beta2), eps=train_args.adam_epsilon,
            fused=device.type == "cuda",
        )
        flops, tokenizer = flops_per_token(model, T), get_tokenizer(model_max_length=model.config.block_size)
        model, optimizer = accelerator.prepare(model, optimizer)
        skip_model_in_training_state(accelerator)
        run = Run(args, accelerator, model, optimizer, tokenizer,
                  train_loader, val_loader, hellaswag, start_step, grad_accum, 0, run_recipe, flops,
                  peak_flops_per_device(device, train_args.peak_flops), lock)
        elastic = None
        if state:
            elastic = load_training_state(accelerator, checkpoint, state, train_args.seed)
            train_loader.load_state_dict(state["loader_state"])
            run.skipped_steps = state["skipped_steps"]
    except BaseException:
        if lock:
            lock.release()
        raise

    # logging: the --report_to trackers through Accelerate, log.txt and a progress bar on the main process
    try:
        start_trackers(accelerator, train_args.project, flat_config(args))
    except BaseException:
        if lock:
            lock.release()
        raise
    if train_args.push_to_hub and accelerator.is_main_process:
        from .hub import HubPusher

        run.pusher = HubPusher(train_args.hub_model_id, private=train_args.hub_private,
                               gpt2_copy=train_args.hub_gpt2_copy)
    n_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    run.log(f"world_size {world_size} | device {device} | mixed_precision {train_args.mixed_precision} | "
            f"compile {train_args.compile} | distributed {accelerator.distributed_type.value}")
    run.log(f"model {model_args.init_from or model_args.preset} | {n_params:,} parameters | "
            f"{flops / 1e6:,.1f} MFLOP per token")
    run.log(f"total_batch_size {train_args.total_batch_size:,} = B {B} x T {T} x world_size {world_size} x "
            f"grad_accum {grad_accum} | max_steps {train_args.max_steps} | warmup {train_args.num_warmup_steps()}")
    for path in swept:
        run.log(f"removed {path.name}, left by an interrupted save or prune")
    for path in ckpt.unfinished_checkpoints(train_args.output_dir):
        run.log(f"ignoring {path}: an unfinished checkpoint (no {ckpt.COMPLETE_NAME} marker)")
    for line in skipped:
        run.log(line)
    if checkpoint:
        run.log(f"resumed from {checkpoint} at step {start_step}")
    elif train_args.resume_from_checkpoint == "latest":
        run.log(f"no checkpoint in {train_args.output_dir} yet: starting at step 0")
    if threads_line:
        run.log(threads_line)
    for change in changes:
        run.log(f"recipe change on resume (--allow_recipe_change): {change}")
    if elastic:
        run.log(elastic)
    return run


def fit(run: Run, stop: StopOnSignal | None = None) -> int:
    """The loop: evaluate, sample and checkpoint on their schedules, one optimizer step at a time. A signal stops it
    after the current step, with a checkpoint."""
    from tqdm import tqdm

    from .trackers import log_samples

    model_args, data_args, train_args = run.args
    accelerator, model = run.accelerator, run.model
    rank, main_process = accelerator.process_index, accelerator.is_main_process
    max_steps, warmup = train_args.max_steps, train_args.num_warmup_steps()
    bar = tqdm(total=max_steps, initial=run.start_step, unit="step", disable=not main_process, dynamic_ncols=True)
    steps_since_log, saved_step = 0, run.start_step
    # ranks agree on a stop through a collective: in multi-process runs only right after a logged step, where the
    # host has just synced anyway (so a signal is honoured within --log_every steps; every step by default)
    checks = lambda s: accelerator.num_processes == 1 or (s - 1) % train_args.log_every == 0  # noqa: E731
    checked = run.start_step  # the last step whose stop check has begun: a signal now is due at a later one

    def stop_step() -> int:
        s = checked + 1
        while s < max_steps and not checks(s):
            s += 1
        return min(s, max_steps)

    if stop is not None:
        stop.running(stop_step, rank if accelerator.num_processes > 1 else None)
    for step in range(run.start_step, max_steps + 1):
        run.step = step
        last_step = step == max_steps
        # `checked` moves on before the flag is read: a signal that lands before this line is announced for (and
        # stops at) this step, one after it for the next check step, and the loop stops at the announced step
        checked = step
        stopping = stop is not None and step > run.start_step and checks(step) and stop.agreed(accelerator, step)

        if step % train_args.eval_every == 0 or last_step:
            val_loss, val_bpb = evaluate(model, run.val_loader, accelerator, train_args.eval_steps)
            accelerator.log({"val/loss": val_loss, "val/bpb": val_bpb}, step=step)
            run.log(f"step {step} | val {val_loss:.4f} | bpb {val_bpb:.4f}")

        if run.hellaswag and (step % train_args.hellaswag_every == 0 or last_step):
            from .evaluation.hellaswag import evaluate_hellaswag

            raw_model = accelerator.unwrap_model(model, keep_torch_compile=False)
            metrics = evaluate_hellaswag(raw_model, run.tokenizer, run.hellaswag, accelerator=accelerator,
                                         limit=train_args.hellaswag_limit, progress=False)
            accelerator.log({"hellaswag/acc": metrics["acc"], "hellaswag/acc_norm": metrics["acc_norm"]}, step=step)
            run.log(f"step {step} | hellaswag acc {metrics['acc']:.4f} | acc_norm {metrics['acc_norm']:.4f} | "
                    f"n {metrics['n']}")

        # samples from the main process only (the notes' 4, not 4 per rank); under FSDP every rank takes part in
        # generate (the weights are sharded) and only the main process's are kept
        if (step % train_args.sample_every == 0 or last_step) and (main_process or run.sharded):
            samples = generate_samples(model, run.tokenizer, accelerator, train_args)
            if main_process:
                run.log("\n".join(f"[rank {rank}] sample {i}: {text}" for i, text in enumerate(samples)))
                log_samples(accelerator, samples, step)  # as text, to the trackers that take text

        if step > run.start_step and (step % train_args.save_every == 0 or last_step or stopping):
            path = ckpt.checkpoint_path(train_args.output_dir, step)
            try:
                save_checkpoint(accelerator, model, run.tokenizer, path, trainer_state(run, step))
            except ckpt.WriteError:
                bar.close()  # ends the progress bar's line: the error that follows is a line of its own
                raise
            saved_step = step
            run.log(f"step {step} | saved {path}")
            if run.pusher:
                run.pusher.push(path, f"step {step}")
            if main_process:
                for pruned in ckpt.prune_checkpoints(train_args.output_dir, train_args.keep_last):
                    run.log(f"step {step} | removed {pruned}")

        if stopping and not last_step:
            cause = signal.Signals(stop.received).name if stop.received else "a signal to another process"
            line = (f"stopped by {cause} at step {step}: checkpoint "
                    f"{ckpt.checkpoint_path(train_args.output_dir, saved_step)}; resume with the same command and "
                    "--resume_from_checkpoint latest")
            run.log(line) if main_process else print(f"[rank {rank}] {line}", flush=True)
            break
        if last_step:
            break

        if steps_since_log == 0:
            t0 = time.time()
        lr = get_lr(step, train_args.max_lr, train_args.min_lr, warmup, max_steps)
        loss, norm, skipped = train_step(model, run.optimizer, run.train_loader, accelerator, run.grad_accum, lr,
                                         train_args.grad_clip)
        run.skipped_steps += skipped
        steps_since_log += 1
        bar.update(1)
        if step % train_args.log_every == 0 or step == max_steps - 1:
            loss = accelerator.reduce(loss, reduction="mean").item()  # the host sync, once per logged step
            norm = norm.item()
            dt = (time.time() - t0) / steps_since_log
            steps_since_log = 0
            tokens_per_sec = train_args.total_batch_size / dt
            metrics = {"train/loss": loss, "train/lr": lr, "train/grad_norm": norm, "train/step_time_ms": dt * 1000,
                       "train/tokens_per_sec": tokens_per_sec}
            line = (f"step {step} | loss {loss:.4f} | lr {lr:.1e} | norm {norm:.2f} | dt {dt * 1000:.0f}ms | "
                    f"tok/s {tokens_per_sec:,.0f}")
            if run.peak:
                metrics["train/mfu"] = run.flops * tokens_per_sec / (run.peak * accelerator.num_processes)
                line += f" | mfu {100 * metrics['train/mfu']:.1f}%"
            if accelerator.scaler is not None:
                metrics["train/loss_scale"] = accelerator.scaler.get_scale()
                metrics["train/skipped_steps"] = run.skipped_steps
                line += f" | scale {metrics['train/loss_scale']:g} | skipped {run.skipped_steps}"
            accelerator.log(metrics, step=step)
            run.log(line)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_sec:,.0f}")

    if stop is not None:
        stop.finished()
    bar.close()
    if run.pusher:
        for error in run.pusher.wait():
            run.log(error)
    accelerator.end_training()
    return 0


def trainer_state(run: Run, step: int) -> dict:
    """The JSON-able training state of a checkpoint at ``step``."""
    model_args, data_args, train_args = run.args
    config = run.accelerator.unwrap_model(run.model).config
    return {
        "step": step,
        "world_size": run.accelerator.num_processes,
        "grad_accum_steps": run.grad_accum,
        "tokens_seen": step * train_args.total_batch_size,
        "skipped_steps": run.skipped_steps,
        "cpu_threads": torch.get_num_threads() if run.accelerator.device.type == "cpu" else None,
        "config_hash": ckpt.config_hash(architecture(config)),
        "model_config": {name: getattr(config, name) for name in ARCHITECTURE_FIELDS + ("dropout",)},
        "recipe": run.recipe,
        "loader_state": run.train_loader.state_dict(),
        "args": redact({"model": dataclasses.asdict(model_args), "data": dataclasses.asdict(data_args),
                        "train": dataclasses.asdict(train_args)}),
    }


def train(model_args, data_args, train_args, stop: StopOnSignal | None = None) -> int:
    """One training run (resumed if asked): 0 when it finished or stopped cleanly on a signal, also one during
    start-up (before the first step: nothing is saved). `stop`: handlers already installed (the command installs
    them before its imports)."""
    with contextlib.nullcontext(stop) if stop else StopOnSignal() as stop:
        run, threads = None, torch.get_num_threads()
        try:
            run = setup(model_args, data_args, train_args)
            return fit(run, stop)  # which, before its first step, turns signals into stops with a checkpoint
        except StartupStopped as err:
            return say_stopped_at_startup(err)
        except RuntimeError as err:  # a collective failed: one line if another process died or hung, exit 1
            if run is None or not report_lost_peer(err, run):  # (setup's errors are its own)
                raise
            return 1
        finally:
            if run is not None and run.lock:
                run.lock.release()
            torch.set_num_threads(threads)  # a CPU run sets its own (cpu_threads): the caller's is put back
