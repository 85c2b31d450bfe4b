"""Training throughput: MiniGPT vs GPT2LMHeadModel (SDPA) driven by the same step code, in one process.

For every mode and batch size both models run ``train_step`` (``_common.py``): forward with ``labels=input_ids``,
backward (no gradient accumulation), global-norm clip to 1.0, AdamW (lr 6e-4, betas 0.9/0.95, weight decay 0.1 on
2-D weights, fused on CUDA). Steps are interleaved (A×iters, B×iters per round) after ``--warmup`` untimed steps.
Reported per model: median step time, tokens/s (B×T per step), MFU, peak memory, first-step time (with compile,
mostly compilation; each new batch size compiles again since shapes are static), and the ratio MiniGPT / GPT2.

Modes: ``[eager|compile]-{fp32,bf16,fp16}[-scaler]``; ``fp32`` is short for ``eager-fp32``. bf16/fp16 mean autocast
over fp32 weights; ``-scaler`` adds ``torch.amp.GradScaler`` (needed for fp16).

    MFU = FLOPs/token × tokens/s / peak,   FLOPs/token = 6·N + 12·L·H·Q·T
    (N parameters excluding position embeddings, each model its own; L layers, H heads, Q head dim, T seq len)

Peak FLOP/s: ``--peak_flops``, else 989e12 (H100/H200 dense bf16/fp16) on an H100/H200; elsewhere MFU is n/a.
Peak memory (CUDA): the model's weights and optimizer state plus the step's highest allocation above what was
allocated before it — so the other model held in the same process does not count.

Comparing with the trainer: ``train_step(model, optimizer, batch, scaler, amp_dtype=..., grad_clip=...)`` is the
boundary. ``measure_mode(..., step_fn=...)`` takes any function with that signature, so the trainer's own step
(Accelerate's ``backward``/``clip_grad_norm_``, its optimizer and scheduler calls) can be timed against this bare
step on the same model, batch and mode; the difference is the trainer's loop overhead. A run of ``minigpt train``
with the same shape, batch and precision can also be compared end to end with this script's tokens/s, which then
also counts data loading and logging.

    python benchmarks/train_throughput.py --device cpu                       # small shape, fp32, B=2,4
    python benchmarks/train_throughput.py --device cuda --json out/train.json  # 124M, B=16,32,64, three modes
"""

from __future__ import annotations

import argparse
import re

import torch

from _common import (
    DTYPES,
    Formatter,
    MODELS,
    SHAPES,
    Report,
    add_common_args,
    build_models,
    compare,
    environment,
    interleaved,
    positive_int,
    random_tokens,
    ratio_cell,
    setup,
    spread_cell,
    sync,
    train_step,
)

H100_H200_BF16_DENSE = 989e12
MODE = re.compile(r"(?:(eager|compile)-)?(fp32|bf16|fp16)(-scaler)?")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    add_common_args(p)
    p.add_argument("--seq_len", type=int, help="default: the shape's block size")
    p.add_argument("--batch_sizes", help="comma-separated; default: 16,32,64 on cuda, 2,4 on cpu")
    p.add_argument("--modes", help="comma-separated; default: eager-bf16,compile-bf16,compile-fp16-scaler on cuda, "
                                   "fp32 on cpu")
    p.add_argument("--peak_flops", type=float, help="peak FLOP/s for MFU; default 989e12 on H100/H200, else MFU n/a")
    p.add_argument("--iters", type=positive_int, default=5, help="timed steps per model and round")
    p.add_argument("--lr", type=float, default=6e-4, help="AdamW learning rate")
    p.add_argument("--weight_decay", type=float, default=0.1, help="on 2-D weights only")
    p.add_argument("--grad_clip", type=float, default=1.0, help="global gradient-norm clip; 0 = off")
    p.set_defaults(rounds=3, warmup=3)
    args = p.parse_args()
    gpu = args.device == "cuda"
    args.shape = args.shape or ("124m" if gpu else "small")
    args.seq_len = args.seq_len or SHAPES[args.shape]["block_size"]
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("16,32,64" if gpu else "2,4")).split(",")]
    args.modes = (args.modes or ("eager-bf16,compile-bf16,compile-fp16-scaler" if gpu else "fp32")).split(",")
    for mode in args.modes:
        if not MODE.fullmatch(mode):
            p.error(f"--modes: {mode!r} is not [eager|compile]-{{fp32,bf16,fp16}}[-scaler], e.g. compile-bf16")
    return args


def default_peak_flops(device: torch.device, mode: str) -> float | None:
    """989e12 for bf16/fp16 on an H100/H200 (dense tensor cores), None where we do not know the peak."""
    if device.type != "cuda" or MODE.fullmatch(mode).group(2) == "fp32":
        return None
    name = torch.cuda.get_device_name(device)
    return H100_H200_BF16_DENSE if "H100" in name or "H200" in name else None


def flops_per_token(model, seq_len: int) -> int:
    """6·N + 12·L·H·Q·T, with N the parameters excluding the position embeddings (a tied LM head counts once)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * seq_len


def param_groups(model, weight_decay: float) -> list[dict]:
    """nanoGPT's rule for both models: weights of 2+ dimensions decay, biases and LayerNorm parameters do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def peak_step_memory(step, model, optimizer, device: torch.device) -> int | None:
    """Bytes one step needs: weights + optimizer state + the step's peak above what was allocated before it."""
    if device.type != "cuda":
        return None
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    state = [t for s in optimizer.state.values() for t in s.values()]
    return tensor_bytes(model.parameters()) + tensor_bytes(state) + torch.cuda.max_memory_allocated(device) - before


def measure_mode(args, device, mode: str, report: Report, step_fn=train_step) -> dict:
    """Both models in one mode, every batch size; one table row per (batch size, model). Returns tokens/s by
    (batch size, model)."""
    compiled, dtype, scaled = MODE.fullmatch(mode).groups()
    amp_dtype = None if dtype == "fp32" else DTYPES[dtype]
    peak = args.peak_flops or default_peak_flops(device, mode)
    if compiled == "compile":
        torch._dynamo.reset()  # the previous mode's graphs belong to models that are gone
    torch.manual_seed(args.seed)
    models = build_models(args.shape, device, args.loss_chunk_size)
    runs = {}
    for name, model in models.items():
        model.train()
        optimizer = torch.optim.AdamW(
            param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda"
        )
        scaler = torch.amp.GradScaler(device.type) if scaled else None
        step_model = torch.compile(model, dynamic=False) if compiled == "compile" else model
        runs[name] = (model, step_model, optimizer, scaler)
    throughput = {}
    for batch_size in args.batch_sizes:
        batch = random_tokens(batch_size, args.seq_len, device)
        steps = {
            name: (lambda m=m, o=o, s=s: step_fn(m, o, batch, s, amp_dtype=amp_dtype, grad_clip=args.grad_clip))
            for name, (_, m, o, s) in runs.items()
        }
        times = interleaved(steps, device, warmup=args.warmup, rounds=args.rounds, iters=args.iters)
        memory = {name: peak_step_memory(steps[name], model, o, device) for name, (model, _, o, _) in runs.items()}
        result = compare(times, work=batch_size * args.seq_len)
        for name in MODELS:
            model = runs[name][0]
            fpt = flops_per_token(model, args.seq_len)
            tokens_per_s = result[name]["per_s"]
            mfu = fpt * tokens_per_s / peak if peak else None
            throughput[batch_size, name] = tokens_per_s
            report.row(
                [mode, batch_size, name, f"{result[name]['median_s'] * 1e3:.1f}", f"{tokens_per_s:,.0f}",
                 f"{mfu:.1%}" if mfu is not None else "n/a",
                 f"{memory[name] / 2**30:.2f}" if memory[name] is not None else "n/a",
                 f"{result[name]['first_call_s']:.2f}",
                 ratio_cell(result) if name == "MiniGPT" else "", spread_cell(result) if name == "MiniGPT" else ""],
                {"mode": mode, "batch": batch_size, "seq_len": args.seq_len, "model": name,
                 "median_step_s": result[name]["median_s"], "tokens_per_s": tokens_per_s, "flops_per_token": fpt,
                 "peak_flops": peak, "mfu": mfu, "peak_memory_bytes": memory[name],
                 "first_step_s": result[name]["first_call_s"],
                 "ratio_mini_over_gpt2": result["ratio"], "ratio_min": result["ratio_min"],
                 "ratio_max": result["ratio_max"], "ratio_per_round": result["ratio_per_round"]},
            )
    return throughput


def main() -> None:
    args = parse_args()
    device = setup(args.device, args.seed, args.threads)
    shape = SHAPES[args.shape]
    header = {"benchmark": "train_throughput", "environment": environment(device), "args": vars(args)}
    report = Report(args.json, header)
    env = report.data["environment"]
    print(f"# Training throughput, MiniGPT vs GPT2LMHeadModel (SDPA) — {env['device']}, torch {env['torch']}, "
          f"transformers {env['transformers']}, {env['date']}")
    print(f"\nshape {args.shape}: {shape['n_layer']} layers × {shape['n_head']} heads × {shape['n_embd']} wide, "
          f"T={args.seq_len}; vocabulary MiniGPT 50304 (padded), GPT2 50257. Step: fwd + bwd + clip "
          f"{args.grad_clip} + AdamW{' (fused)' if device.type == 'cuda' else ''}, no accumulation. "
          f"{args.rounds} interleaved rounds × {args.iters} steps after {args.warmup} warm-up steps."
          f"{f' MiniGPT loss_chunk_size {args.loss_chunk_size}.' if args.loss_chunk_size else ''}\n"
          "MFU = FLOPs/token × tokens/s / peak, FLOPs/token = 6·N + 12·L·H·Q·T (N = parameters excl. position "
          "embeddings). Peak memory = weights + optimizer state + the step's peak allocation. First step includes "
          "compilation in compile modes.")
    report.table(
        "Training step",
        ["mode", "B", "model", "step ms (median)", "tok/s", "MFU", "peak mem GiB", "first step s",
         "ratio MiniGPT/GPT2", "ratio range over rounds"],
    )
    throughput = {mode: measure_mode(args, device, mode, report) for mode in args.modes}
    if "compile-bf16" in throughput and "compile-fp16-scaler" in throughput:
        bf16, fp16 = throughput["compile-bf16"], throughput["compile-fp16-scaler"]
        ratios = {f"{name} B={b}": fp16[b, name] / bf16[b, name] for (b, name) in bf16 if (b, name) in fp16}
        report.set("fp16_scaler_over_bf16", ratios)
        report.note("compile-fp16-scaler / compile-bf16 tokens/s: "
                    + ", ".join(f"{key} {r:.3f}" for key, r in ratios.items()))


if __name__ == "__main__":
    main()
