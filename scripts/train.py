"""Pre-train MiniGPT (GPT-2 small and friends) with the notes' recipe, on Hugging Face Accelerate.

    python scripts/train.py --config configs/tiny.yaml                      # one process (CPU demo, minutes)
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml scripts/train.py --config configs/gpt2-124m.yaml
    accelerate launch ... scripts/train.py --config configs/gpt2-124m.yaml --resume_from_checkpoint latest

The loop follows build-nanogpt's ``train_gpt2.py``; every optimisation is one visible line: TF32 matmuls, autocast
(bf16, or fp16 with dynamic loss scaling), torch.compile, SDPA flash attention (in the model), fused AdamW on CUDA,
gradient accumulation to ``total_batch_size`` tokens with one all-reduce per optimizer step, clipping at 1.0 and a
cosine LR set from the step number. At step s the model has taken s optimizer steps: validation, samples and
checkpoints at step s describe that model, and the training loss logged at step s is that of update s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm import tqdm

from minigpt_hf import EOT_ID, MiniGPTConfig, MiniGPTForCausalLM, get_tokenizer
from minigpt_hf.data import DistributedTokenLoader, ensure_embedded_shards, read_manifest
from minigpt_hf.hub import HubPusher
from minigpt_hf.training import (
    TRAINING_STATE_DIR,
    check_no_later_checkpoints,
    check_resumable,
    checkpoint_path,
    enable_cpu_fp16,
    flat_config,
    flops_per_token,
    get_lr,
    grad_accum_steps,
    parse_args,
    peak_flops_per_device,
    prune_checkpoints,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
    skip_model_in_training_state,
    trainer_state,
)


def build_model(model_args) -> MiniGPTForCausalLM:
    """A fresh model of the preset (with overrides), or the weights of ``--init_from``."""
    if model_args.init_from is None:
        return MiniGPTForCausalLM(MiniGPTConfig.from_preset(model_args.preset, **model_args.overrides()))
    config_file = Path(model_args.init_from) / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "minigpt":
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
            loss = model(x, shift_labels=y).loss
            loss_accum += loss.detach() / grad_accum
            accelerator.backward(loss)
    norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)  # unscales fp16 gradients first
    scale = accelerator.scaler.get_scale() if accelerator.scaler is not None else None
    optimizer.step()  # through the GradScaler under fp16: skipped if any gradient is inf/nan
    optimizer.zero_grad(set_to_none=True)
    # A skipped step is one where the scaler backed off. (accelerator.optimizer_step_was_skipped misses it with fused
    # AdamW: GradScaler then always calls step() and lets the fused kernel skip the update.)
    skipped = scale is not None and accelerator.scaler.get_scale() < scale
    return loss_accum, norm, skipped


@torch.no_grad()
def evaluate(model, loader, accelerator, steps: int) -> float:
    """Mean loss over `steps` validation batches per process, averaged over all processes."""
    model.eval()
    loader.reset()
    loss = torch.zeros((), device=accelerator.device)
    for _ in range(steps):
        x, y = loader.next_batch()
        loss += model(x.to(accelerator.device), shift_labels=y.to(accelerator.device)).loss / steps
    model.train()
    return accelerator.reduce(loss, reduction="mean").item()


@torch.no_grad()
def generate_samples(model, tokenizer, accelerator, train_args) -> list[str]:
    """``num_samples`` top-k continuations of the prompt from the unwrapped, uncompiled model, seeded per rank as in
    build-nanogpt; the global RNG is forked so that sampling leaves training's random stream untouched."""
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


def main(argv: list[str] | None = None) -> int:
    try:
        return train(*parse_args(argv))
    except (ValueError, OSError) as err:  # bad input: one line, no traceback
        print(f"train.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1


def train(model_args, data_args, train_args) -> int:
    args = (model_args, data_args, train_args)
    B, T = data_args.micro_batch_size, data_args.seq_len
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer
    accelerator = Accelerator(
        mixed_precision=train_args.mixed_precision,
        dynamo_backend="inductor" if train_args.compile else "no",
        log_with="tensorboard",
        project_dir=train_args.output_dir,
    )
    enable_cpu_fp16(accelerator)
    rank, world_size, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    main_process = accelerator.is_main_process
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world_size:
        raise ValueError(f"{launched} processes were launched but Accelerate runs {world_size}: without a GPU, "
                         "launch with ACCELERATE_USE_CPU=1 (see accelerate_configs/README.md)")
    grad_accum = grad_accum_steps(train_args.total_batch_size, B, T, world_size)
    accelerator.gradient_accumulation_steps = grad_accum

    checkpoint = resolve_checkpoint(train_args.resume_from_checkpoint, train_args.output_dir)
    state = read_trainer_state(checkpoint) if checkpoint else None
    start_step = state["step"] if state else 0
    check_no_later_checkpoints(train_args.output_dir, start_step)

    # data: the embedded corpus is prepared on first use, by the main process while the others wait
    if data_args.data_source == "embedded" and main_process:
        ensure_embedded_shards(data_args.data_dir)
    accelerator.wait_for_everyone()
    read_manifest(data_args.data_dir)  # a clear error when --data_source shards has nothing there
    train_loader = DistributedTokenLoader(data_args.data_dir, "train", B, T, rank, world_size)
    val_loader = DistributedTokenLoader(data_args.data_dir, "val", B, T, rank, world_size)
    hellaswag = None
    if train_args.hellaswag_path:
        from minigpt_hf.evaluation.hellaswag import evaluate_hellaswag, load_hellaswag

        hellaswag = load_hellaswag(train_args.hellaswag_path)

    # model and optimizer
    set_seed(train_args.seed)
    model = build_model(model_args)
    model.config.loss_chunk_size = model_args.loss_chunk_size  # a training-time memory lever, not architecture
    if T > model.config.block_size:
        raise ValueError(f"--seq_len {T} is longer than the model's block_size {model.config.block_size}")
    if state:
        check_resumable(state, checkpoint, world_size, model.config, train_args.total_batch_size)
        model = MiniGPTForCausalLM.from_pretrained(checkpoint, config=model.config, dtype=torch.float32)
    if train_args.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config, flops, n_params = model.config, flops_per_token(model, T), sum(p.numel() for p in model.parameters())
    tokenizer = get_tokenizer(model_max_length=config.block_size)
    optimizer = torch.optim.AdamW(
        model.optimizer_groups(train_args.weight_decay), lr=train_args.max_lr,
        betas=(train_args.adam_beta1, train_args.adam_beta2), eps=train_args.adam_epsilon,
        fused=device.type == "cuda",
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    skip_model_in_training_state(accelerator)
    skipped_steps = 0
    if state:
        accelerator.load_state(str(checkpoint / TRAINING_STATE_DIR))  # optimizer, scaler, this rank's RNG
        train_loader.load_state_dict(state["loader_states"][rank])
        skipped_steps = state["skipped_steps"]

    # logging: TensorBoard through Accelerate, log.txt and a progress bar on the main process
    peak = peak_flops_per_device(device, train_args.peak_flops)
    accelerator.init_trackers("tensorboard", config=flat_config(args))
    pusher = None  # uploads run in the background, after each checkpoint is safely on disk
    if train_args.push_to_hub and main_process:
        pusher = HubPusher(train_args.hub_model_id, private=train_args.hub_private)
    log_file = Path(train_args.output_dir) / "log.txt"
    log_file.parent.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        if main_process:
            tqdm.write(message, file=sys.stdout)
            with log_file.open("a", encoding="utf-8") as f:
                f.write(message + "\n")

    log(f"world_size {world_size} | device {device} | mixed_precision {train_args.mixed_precision} | "
        f"compile {train_args.compile} | distributed {accelerator.distributed_type.value}")
    log(f"model {model_args.init_from or model_args.preset} | {n_params:,} parameters | "
        f"{flops / 1e6:,.1f} MFLOP per token")
    log(f"total_batch_size {train_args.total_batch_size:,} = B {B} x T {T} x world_size {world_size} x "
        f"grad_accum {grad_accum} | max_steps {train_args.max_steps} | warmup {train_args.num_warmup_steps()}")
    if checkpoint:
        log(f"resumed from {checkpoint} at step {start_step}")
    elif train_args.resume_from_checkpoint == "latest":
        log(f"no checkpoint in {train_args.output_dir} yet: starting at step 0")

    max_steps, warmup = train_args.max_steps, train_args.num_warmup_steps()
    bar = tqdm(total=max_steps, initial=start_step, unit="step", disable=not main_process, dynamic_ncols=True)
    steps_since_log = 0
    for step in range(start_step, max_steps + 1):
        last_step = step == max_steps

        if step % train_args.eval_every == 0 or last_step:
            val_loss = evaluate(model, val_loader, accelerator, train_args.eval_steps)
            accelerator.log({"val/loss": val_loss}, step=step)
            log(f"step {step} | val {val_loss:.4f}")

        if hellaswag and (step % train_args.hellaswag_every == 0 or last_step):
            raw_model = accelerator.unwrap_model(model, keep_torch_compile=False)
            metrics = evaluate_hellaswag(raw_model, tokenizer, hellaswag, accelerator=accelerator,
                                         limit=train_args.hellaswag_limit, progress=False)
            accelerator.log({"hellaswag/acc": metrics["acc"], "hellaswag/acc_norm": metrics["acc_norm"]}, step=step)
            log(f"step {step} | hellaswag acc {metrics['acc']:.4f} | acc_norm {metrics['acc_norm']:.4f} | "
                f"n {metrics['n']}")

        if step % train_args.sample_every == 0 or last_step:
            samples = generate_samples(model, tokenizer, accelerator, train_args)
            lines = "\n".join(f"[rank {rank}] sample {i}: {text}" for i, text in enumerate(samples))
            if main_process:
                log(lines)
            else:
                print(lines, flush=True)
            accelerator.log({"samples": "\n\n".join(f"    {text}" for text in samples)}, step=step)

        if step > start_step and (step % train_args.save_every == 0 or last_step):
            path = checkpoint_path(train_args.output_dir, step)
            save_checkpoint(accelerator, model, tokenizer, path,
                            trainer_state(step, world_size, grad_accum, skipped_steps, config, args),
                            train_loader.state_dict())
            log(f"step {step} | saved {path}")
            if pusher:
                pusher.push(path, f"step {step}")
            if main_process:
                for pruned in prune_checkpoints(train_args.output_dir, train_args.keep_last):
                    log(f"step {step} | removed {pruned}")

        if last_step:
            break

        if steps_since_log == 0:
            t0 = time.time()
        lr = get_lr(step, train_args.max_lr, train_args.min_lr, warmup, max_steps)
        loss, norm, skipped = train_step(model, optimizer, train_loader, accelerator, grad_accum, lr,
                                         train_args.grad_clip)
        skipped_steps += skipped
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
            if peak:
                metrics["train/mfu"] = flops * tokens_per_sec / (peak * world_size)
                line += f" | mfu {100 * metrics['train/mfu']:.1f}%"
            if accelerator.scaler is not None:
                metrics["train/loss_scale"] = accelerator.scaler.get_scale()
                metrics["train/skipped_steps"] = skipped_steps
                line += f" | scale {metrics['train/loss_scale']:g} | skipped {skipped_steps}"
            accelerator.log(metrics, step=step)
            log(line)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_sec:,.0f}")

    bar.close()
    if pusher:
        for error in pusher.wait():
            log(error)
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
