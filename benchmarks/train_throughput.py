"""Training throughput: the trainer's own step on MiniGPT against a nanoGPT-style model and GPT2LMHeadModel (SDPA),
interleaved in one process.

MiniGPT runs ``minigpt_hf.training.train_step`` itself, the function ``minigpt train`` calls every step: a real
``Accelerator`` (its ``prepare``, ``accumulate``, ``backward``, ``clip_grad_norm_`` and optimizer wrapper; with
``compile-*`` modes Accelerate compiles the model, as the trainer's ``--compile`` does), the model's
``optimizer_groups``, and a loader object whose ``next_batch()`` returns the same (x, y) every step. Its peers run the
same recipe by hand: set the learning rate, forward (autocast in bf16/fp16 modes), backward (through a GradScaler in
``-scaler`` modes), unscale, clip the global gradient norm to 1.0, AdamW step, ``zero_grad(set_to_none=True)``.
AdamW everywhere: lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on 2-D weights only, fused on CUDA; no
gradient accumulation. Peers (``--peers``, MiniGPT first; every ratio is MiniGPT / that peer, higher is better):

    MiniGPT         MiniGPTForCausalLM through training.train_step
    NanoGPT         a nanoGPT-style GPT written in _common.py: nn.Linear, F.scaled_dot_product_attention (causal),
                    tied head, F.cross_entropy over all 50304 logits; same init and shapes as MiniGPT
    GPT2            transformers.GPT2LMHeadModel (SDPA), F.cross_entropy over its 50257 logits
    MiniGPT-hfloss  MiniGPT through train_step with transformers' ForCausalLMLoss: the loss path before issue 20
    MiniGPT-chunk   MiniGPT through train_step with config.loss_chunk_size = --loss_chunk_size (peak memory)

Steps are interleaved (each model × iters, per round, ``--rounds`` rounds) after ``--warmup`` untimed steps; the
ratio is the median of the per-round ratios, with their range. Reported per model: median step time, tokens/s (B×T
per step), MFU, peak memory (CUDA), first-step time (compile modes: mostly compilation) and the ratios.

Modes: ``[eager|compile]-{fp32,bf16,fp16}[-scaler]``; ``fp32`` is short for ``eager-fp32``. bf16/fp16 mean autocast
over fp32 weights (Accelerate's ``mixed_precision`` for MiniGPT); ``-scaler`` adds a GradScaler (Accelerate's for
MiniGPT), which fp16 needs. Compilation: ``torch.compile`` with its defaults for every model (Accelerate's
``dynamo_backend="inductor"`` for MiniGPT), so a second batch size recompiles once with a dynamic batch dimension.

    MFU = FLOPs/token × tokens/s / peak,   FLOPs/token = 6·N + 12·L·H·Q·T
    (N parameters excluding position embeddings, each model its own, a tied head counted once; L layers, H heads,
    Q head dim, T sequence length; PaLM's convention, as the trainer logs it)

Peak FLOP/s: ``--peak_flops``, else 989e12 (H100/H200 dense bf16/fp16) on an H100/H200; elsewhere MFU is n/a.
Peak memory (CUDA): the model's weights and optimizer state plus the step's highest allocation above what was
allocated before it — so the other models held in the same process do not count.

    python benchmarks/train_throughput.py --device cpu              # small shape, fp32, B=8, 1 thread, 10 rounds
    python benchmarks/train_throughput.py --device cuda --json out/train.json  # 124M, compile-bf16, B=32,16,64
"""

from __future__ import annotations

import argparse
import re

import torch
import torch.nn.functional as F

from _common import (
    DTYPES,
    PEERS,
    Formatter,
    SHAPES,
    Report,
    add_common_args,
    backward_and_step,
    build_model,
    compare,
    environment,
    on_clock,
    interleaved,
    load_average,
    positive_int,
    random_tokens,
    setup,
    sync,
)

H100_H200_BF16_DENSE = 989e12
MODE = re.compile(r"(?:(eager|compile)-)?(fp32|bf16|fp16)(-scaler)?")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    add_common_args(p)
    p.add_argument("--seq_len", type=int, help="default: the shape's block size")
    p.add_argument("--batch_sizes", help="comma-separated; default: 32,16,64 on cuda (32 first: it compiles static), "
                                         "8 on cpu")
    p.add_argument("--modes", help="comma-separated; default: compile-bf16 on cuda, fp32 on cpu")
    p.add_argument("--peers", default="MiniGPT,NanoGPT,GPT2",
                   help=f"comma-separated, MiniGPT first; from {', '.join(PEERS)}")
    p.add_argument("--peak_flops", type=float, help="peak FLOP/s for MFU; default 989e12 on H100/H200, else MFU n/a")
    p.add_argument("--iters", type=positive_int, help="timed steps per model and round; default 5 on cuda, 2 on cpu")
    p.add_argument("--lr", type=float, default=6e-4, help="AdamW learning rate")
    p.add_argument("--weight_decay", type=float, default=0.1, help="on 2-D weights only")
    p.add_argument("--grad_clip", type=float, default=1.0, help="global gradient-norm clip")
    p.add_argument("--profile", type=int, metavar="B", help="after timing batch size B, profile 2 steps of each model "
                                                            "(torch.profiler) and print the top ops")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    args.shape = args.shape or ("124m" if gpu else "small")
    args.seq_len = args.seq_len or SHAPES[args.shape]["block_size"]
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("32,16,64" if gpu else "8")).split(",")]
    args.modes = (args.modes or ("compile-bf16" if gpu else "fp32")).split(",")
    args.peers = args.peers.split(",")
    args.threads = args.threads or (None if gpu else 1)
    args.rounds = args.rounds or (3 if gpu else 10)
    args.warmup = args.warmup or (2 if gpu else 1)
    args.iters = args.iters or (5 if gpu else 2)
    for mode in args.modes:
        if not MODE.fullmatch(mode):
            p.error(f"--modes: {mode!r} is not [eager|compile]-{{fp32,bf16,fp16}}[-scaler], e.g. compile-bf16")
        if MODE.fullmatch(mode).group(2) == "fp16" and not mode.endswith("-scaler"):
            p.error(f"--modes: {mode!r} without -scaler: Accelerate always scales fp16, so the peers must too "
                    f"({mode}-scaler)")
    if args.clock == "cpu" and gpu:
        p.error("--clock cpu measures CPU work; on cuda the kernels run asynchronously: use --clock wall")
    unknown = [name for name in args.peers if name not in PEERS]
    if unknown or args.peers[0] != "MiniGPT" or len(set(args.peers)) != len(args.peers):
        p.error(f"--peers: MiniGPT first, then any of {', '.join(list(PEERS)[1:])}, each once; "
                f"got {','.join(args.peers)}")
    if "MiniGPT-chunk" in args.peers and args.loss_chunk_size <= 0:
        p.error("--peers MiniGPT-chunk needs --loss_chunk_size > 0")
    return args


def default_peak_flops(device: torch.device, mode: str) -> float | None:
    """989e12 for bf16/fp16 on an H100/H200 (dense tensor cores), None where we do not know the peak."""
    if device.type != "cuda" or MODE.fullmatch(mode).group(2) == "fp32":
        return None
    name = torch.cuda.get_device_name(device)
    return H100_H200_BF16_DENSE if "H100" in name or "H200" in name else None


def flops_per_token(model, shape: dict, seq_len: int) -> int:
    """6·N + 12·L·H·Q·T, with N the parameters excluding the position embeddings (a tied LM head counts once)."""
    wpe = getattr(model, "transformer", model).wpe.weight
    n = sum(p.numel() for p in model.parameters()) - wpe.numel()
    return 6 * n + 12 * shape["n_layer"] * shape["n_head"] * (shape["n_embd"] // shape["n_head"]) * seq_len


def param_groups(model, weight_decay: float) -> list[dict]:
    """nanoGPT's rule (MiniGPT's ``optimizer_groups``): weights of 2+ dimensions decay, biases and LayerNorm
    parameters do not."""
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


class Batches:
    """The loader ``train_step`` reads: ``next_batch()`` -> (x, y), here the same int64 batch every step."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


def fresh_accelerate_state() -> None:
    """Forget the Accelerate singletons, so that the next mode's Accelerator may use another mixed precision."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def trainer_step(model, device: torch.device, mode: str, args):
    """MiniGPT prepared as ``training.setup`` prepares it; returns (step, prepared model, optimizer)."""
    from accelerate import Accelerator

    from minigpt_hf import training

    compiled, dtype, _ = MODE.fullmatch(mode).groups()
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision={"fp32": "no"}.get(dtype, dtype),
                              dynamo_backend="inductor" if compiled == "compile" else "no")
    training.enable_cpu_fp16(accelerator)
    accelerator.gradient_accumulation_steps = 1
    model.train()
    optimizer = torch.optim.AdamW(model.optimizer_groups(args.weight_decay), lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                                  fused=device.type == "cuda")
    prepared, optimizer = accelerator.prepare(model, optimizer)

    def step(loader):
        return training.train_step(prepared, optimizer, loader, accelerator, 1, args.lr, args.grad_clip)

    return step, prepared, optimizer


class PlainLoss(torch.nn.Module):
    """``forward(x, y)``: a transformers causal LM's logits, then ``F.cross_entropy`` (compiled with the model)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        logits = self.model(input_ids=x).logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))


def plain_step(model, name: str, device: torch.device, mode: str, args):
    """A peer's step, the same recipe by hand; returns (step, model, optimizer)."""
    compiled, dtype, scaled = MODE.fullmatch(mode).groups()
    amp_dtype = None if dtype == "fp32" else DTYPES[dtype]
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                                  fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type) if scaled else None
    loss_fn = model if name == "NanoGPT" else PlainLoss(model)
    loss_fn = torch.compile(loss_fn) if compiled == "compile" else loss_fn

    def step(loader):
        for group in optimizer.param_groups:
            group["lr"] = args.lr
        x, y = loader.next_batch()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(x, y)
        norm = backward_and_step(model, optimizer, loss, scaler, args.grad_clip)
        return loss.detach(), norm

    return step, model, optimizer


def profile_steps(steps: dict, device: torch.device, report: Report, batch_size: int) -> None:
    """Two steps of each model under torch.profiler: the ops with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, step in steps.items():
        step()
        sync(device)
        with profile(activities=activities) as prof:
            for _ in range(2):
                step()
            sync(device)
        table = prof.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=60)
        report.note(f"#### Profile: {name}, B={batch_size}, 2 steps\n\n```\n{table}\n```")
        report.set(f"profile_{name}_B{batch_size}", table)


def ratio_text(vs: dict, peer: str, name: str) -> str:
    """"median (min–max)" of ``name``'s speed over ``peer``'s; empty where the table shows no such ratio (a peer
    against itself, the MiniGPT variants against each other except MiniGPT's own row, the plain peers' rows)."""
    if peer not in vs or (name != "MiniGPT" and peer.startswith("MiniGPT")):
        return ""
    r = vs[peer]
    return f"{r['ratio']:.3f} ({r['ratio_min']:.3f}–{r['ratio_max']:.3f})"


def measure_mode(args, device, mode: str, report: Report) -> dict:
    """Every peer in one mode, every batch size; one table row per (batch size, model). Returns tokens/s by
    (batch size, model)."""
    shape = SHAPES[args.shape]
    compiled = MODE.fullmatch(mode).group(1) == "compile"
    peak = args.peak_flops or default_peak_flops(device, mode)
    fresh_accelerate_state()
    if compiled:
        torch._dynamo.reset()  # the previous mode's graphs belong to models that are gone
    torch.manual_seed(args.seed)
    runs = {}
    for name in args.peers:
        model = build_model(name, args.shape, device, args.loss_chunk_size)
        if name.startswith("MiniGPT"):
            runs[name] = trainer_step(model, device, mode, args)
        else:
            runs[name] = plain_step(model, name, device, mode, args)
    throughput = {}
    for batch_size in args.batch_sizes:
        window = random_tokens(batch_size, args.seq_len + 1, device)
        loader = Batches(window[:, :-1].contiguous(), window[:, 1:].contiguous())
        steps = {name: (lambda step=step: step(loader)) for name, (step, _, _) in runs.items()}
        times = interleaved(steps, device, warmup=args.warmup, rounds=args.rounds, iters=args.iters,
                            clock=args.clock)
        memory = {name: peak_step_memory(steps[name], model, o, device) for name, (_, model, o) in runs.items()}
        work = batch_size * args.seq_len
        result = compare(times, work=work)
        vs = {name: compare(times, work, reference=name)["vs"] for name in args.peers if name.startswith("MiniGPT")}
        other = "cpu" if args.clock == "wall" else "wall"
        other_vs = compare(on_clock(times, other), work)["vs"]
        for name in args.peers:
            fpt = flops_per_token(runs[name][1], shape, args.seq_len)
            tokens_per_s = result[name]["per_s"]
            mfu = fpt * tokens_per_s / peak if peak else None
            throughput[batch_size, name] = tokens_per_s
            ratios = [ratio_text(vs.get(name, {}), p, name) for p in args.peers[1:]]
            report.row(
                [mode, batch_size, name, f"{result[name]['median_s'] * 1e3:.1f}", f"{tokens_per_s:,.0f}",
                 f"{mfu:.1%}" if mfu is not None else "n/a",
                 f"{memory[name] / 2**30:.2f}" if memory[name] is not None else "n/a",
                 f"{result[name]['first_call_s']:.2f}", *ratios],
                {"mode": mode, "batch": batch_size, "seq_len": args.seq_len, "model": name,
                 "median_step_s": result[name]["median_s"], "tokens_per_s": tokens_per_s, "flops_per_token": fpt,
                 "peak_flops": peak, "mfu": mfu, "peak_memory_bytes": memory[name],
                 "first_step_s": result[name]["first_call_s"], "clock": args.clock,
                 "rounds_wall_s": times[name]["rounds_wall_s"], "rounds_cpu_s": times[name]["rounds_cpu_s"],
                 **({"vs": vs[name]} if name in vs else {}),
                 **({f"vs_{other}_clock": other_vs} if name == "MiniGPT" else {})},
            )
        if other_vs and device.type == "cpu":
            report.note(f"B={batch_size}, the same rounds on the {other} clock: MiniGPT "
                        + ", ".join(f"vs {p} {ratio_text(other_vs, p, 'MiniGPT')}" for p in other_vs))
        if args.profile == batch_size:
            profile_steps(steps, device, report, batch_size)
    return throughput


def main(argv=None) -> None:
    args = parse_args(argv)
    device = setup(args.device, args.seed, args.threads)
    shape = SHAPES[args.shape]
    header = {"benchmark": "train_throughput", "environment": environment(device), "args": vars(args)}
    report = Report(args.json, header)
    env = report.data["environment"]
    peers = f" vs {', '.join(args.peers[1:])}" if args.peers[1:] else ""
    print(f"# Training throughput: the trainer's step on MiniGPT{peers} — {env['device']}, "
          f"torch {env['torch']}, transformers {env['transformers']}, {env['date']}, load average "
          f"{env['load_average']}")
    print(f"\n`{env['command']}`\n\nshape {args.shape}: {shape['n_layer']} layers × {shape['n_head']} heads × "
          f"{shape['n_embd']} wide, T={args.seq_len}; vocabulary 50304 (padded; GPT2 50257). Step: fwd + bwd + clip "
          f"{args.grad_clip} + AdamW{' (fused)' if device.type == 'cuda' else ''}, no accumulation; MiniGPT through "
          f"minigpt_hf.training.train_step. {args.rounds} interleaved rounds × {args.iters} steps after "
          f"{args.warmup} warm-up step(s), timed on the {args.clock} clock; 'vs P' = this row's speed / P's (MiniGPT "
          "rows), median of the per-round ratios (range)."
          f"{f' MiniGPT-chunk: loss_chunk_size {args.loss_chunk_size}.' if 'MiniGPT-chunk' in args.peers else ''}\n"
          "MFU = FLOPs/token × tokens/s / peak, FLOPs/token = 6·N + 12·L·H·Q·T (N = parameters excl. position "
          "embeddings). Peak memory = weights + optimizer state + the step's peak allocation. First step includes "
          "compilation in compile modes.")
    report.table(
        "Training step",
        ["mode", "B", "model", "step ms (median)", "tok/s", "MFU", "peak mem GiB", "first step s",
         *[f"vs {p} (range)" for p in args.peers[1:]]],
    )
    throughput = {mode: measure_mode(args, device, mode, report) for mode in args.modes}
    if "compile-bf16" in throughput and "compile-fp16-scaler" in throughput:
        bf16, fp16 = throughput["compile-bf16"], throughput["compile-fp16-scaler"]
        ratios = {f"{name} B={b}": fp16[b, name] / bf16[b, name] for (b, name) in bf16 if (b, name) in fp16}
        report.set("fp16_scaler_over_bf16", ratios)
        report.note("compile-fp16-scaler / compile-bf16 tokens/s (modes run one after the other): "
                    + ", ".join(f"{key} {r:.3f}" for key, r in ratios.items()))
    report.set("load_average_after", load_average())
    report.note(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
