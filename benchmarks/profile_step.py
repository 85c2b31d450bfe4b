"""Where a CPU training step's time goes, piece by piece (issue 20): MiniGPT's LM-head + loss region against the
plain ``F.cross_entropy`` one, and the small costs around it.

Each piece is timed interleaved with its alternatives (median over ``--rounds`` rounds, ``--clock`` as in
``train_throughput.py``), at the benchmark's training shape unless said otherwise:

1. LM head + loss, forward and backward, from the final hidden states (B, T, C) to their gradient and the head's:
   ``F.cross_entropy`` over fresh logits (nanoGPT, and transformers' ForCausalLMLoss, which calls it), MiniGPT's
   ``CausalLMCrossEntropy`` with the logits returned, and loss-only (``return_logits=False``, the trainer's step).
2. The padded-vocabulary fill (``logits[..., 50257:] = finfo.min``, the model's definition of the padding).
3. ``create_causal_mask`` (None for SDPA without padding or cache), the int64 conversion of a loader window.
4. Python overhead: MiniGPT's forward + backward and ``training.train_step`` against NanoGPT's forward + backward and
   the recipe by hand, at a toy shape (2 layers × 64 wide, vocabulary 512, B=1, T=16) where the tensor work is
   negligible, so the difference is plumbing (kwargs, config lookups, Accelerate's accumulate/backward/clip
   wrappers); then cProfile's top functions of MiniGPT's step there.

    python benchmarks/profile_step.py --device cpu --clock cpu
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics

import numpy as np
import torch
import torch.nn.functional as F

from _common import (SHAPES, Formatter, NanoGPT, Report, add_common_args, backward_and_step, environment, interleaved,
                     setup)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    add_common_args(p)
    p.add_argument("--batch", type=int, default=8)
    p.set_defaults(rounds=8, warmup=1)
    args = p.parse_args(argv)
    args.shape = args.shape or "small"
    args.threads = args.threads or 1
    if args.device != "cpu":
        p.error("profile_step.py profiles the CPU step; on a GPU use train_throughput.py --profile B")
    return args


def per_call_ms(times: dict, name: str, calls: int = 1) -> float:
    return statistics.median(s for r in times[name]["rounds_s"] for s in r) * 1e3 / calls


def repeated(fn, reps: int):
    """``fn`` called ``reps`` times in a row, as one callable: small pieces are timed in bulk."""
    def call():
        for _ in range(reps):
            fn()
    return call


def head_and_loss(args, device, report: Report) -> None:
    from minigpt_hf.modeling_minigpt import CausalLMCrossEntropy

    s, V, n_real = SHAPES[args.shape], 50304, 50257
    h = torch.randn(args.batch, s["block_size"], s["n_embd"], device=device, requires_grad=True)
    W = (torch.randn(V, s["n_embd"], device=device) * 0.02).requires_grad_()
    targets = torch.randint(0, n_real, (args.batch * s["block_size"],), device=device)

    def logits():
        out = F.linear(h, W)
        with torch.no_grad():
            out[..., n_real:] = torch.finfo(out.dtype).min
        return out

    def run(loss_fn):
        def call():
            loss_fn().backward()
            h.grad = W.grad = None
        return call

    variants = {
        "F.cross_entropy (NanoGPT; transformers' loss)": run(lambda: F.cross_entropy(logits().view(-1, V), targets)),
        "CausalLMCrossEntropy, logits returned": run(lambda: CausalLMCrossEntropy.apply(logits(), targets, -100, 1)),
        "CausalLMCrossEntropy, loss only (train_step)": run(
            lambda: CausalLMCrossEntropy.apply(logits(), targets, -100, 1, True)),
    }
    times = interleaved(variants, device, warmup=args.warmup, rounds=args.rounds, iters=1, clock=args.clock)
    base = per_call_ms(times, next(iter(variants)))
    report.table(f"1. LM head + loss, forward + backward, B={args.batch}, T={s['block_size']}, V={V} "
                 f"({args.clock} clock)", ["variant", "ms per step", "vs F.cross_entropy"])
    for name in variants:
        ms = per_call_ms(times, name)
        report.row([name, f"{ms:.0f}", f"{ms - base:+.0f} ms"], {"part": "head_and_loss", "variant": name, "ms": ms})


def small_costs(args, device, report: Report) -> None:
    from transformers.masking_utils import create_causal_mask

    from minigpt_hf import MiniGPTConfig

    s = SHAPES[args.shape]
    logits = torch.randn(args.batch, s["block_size"], 50304, device=device)
    config = MiniGPTConfig(**s)
    embeds = torch.randn(args.batch, s["block_size"], s["n_embd"], device=device)
    shard = np.random.randint(0, 50257, 10 * args.batch * s["block_size"], dtype=np.uint16)
    window = args.batch * s["block_size"] + 1
    reps = 200

    def fill():
        with torch.no_grad():
            logits[..., 50257:] = torch.finfo(logits.dtype).min

    pieces = {
        "padded-vocabulary fill (B, T, 47 of 50304 columns)": fill,
        "create_causal_mask (SDPA, no padding, no cache)": lambda: create_causal_mask(config, embeds, None, None, None),
        "loader: uint16 window -> int64 tensor": lambda: torch.from_numpy(shard[:window].astype(np.int64)),
    }
    pieces = {name: repeated(fn, reps) for name, fn in pieces.items()}
    times = interleaved(pieces, device, warmup=1, rounds=args.rounds, iters=1, clock=args.clock)
    report.table(f"2-3. Small costs per call, B={args.batch}, T={s['block_size']} ({args.clock} clock)",
                 ["piece", "µs per call"])
    for name in pieces:
        us = per_call_ms(times, name, reps) * 1e3
        report.row([name, f"{us:.1f}"], {"part": "small_costs", "piece": name, "us": us})


def python_overhead(args, device, report: Report) -> None:
    from accelerate import Accelerator

    from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM, training

    torch.manual_seed(args.seed)
    shape = dict(n_layer=2, n_head=2, n_embd=64, block_size=64)
    mini = MiniGPTForCausalLM(MiniGPTConfig(**shape, vocab_size=512, tokenizer_vocab_size=500, bos_token_id=None,
                                            eos_token_id=None, pad_token_id=None)).train()
    nano = NanoGPT(**shape, vocab_size=512).train()
    w = torch.randint(0, 500, (1, 17), device=device)
    x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()

    class Loader:
        def next_batch(self):
            return x, y

    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(mini.optimizer_groups(0.1), lr=6e-4, betas=(0.9, 0.95))
    prepared, optimizer = accelerator.prepare(mini, optimizer)
    nano_opt = torch.optim.AdamW([p for p in nano.parameters()], lr=6e-4, betas=(0.9, 0.95))
    reps = 50

    def nano_fwd_bwd():
        nano(x, y).backward()
        nano.zero_grad(set_to_none=True)

    def mini_fwd_bwd():
        mini(x, shift_labels=y, return_logits=False).loss.backward()
        mini.zero_grad(set_to_none=True)

    def nano_step():
        for group in nano_opt.param_groups:
            group["lr"] = 6e-4
        backward_and_step(nano, nano_opt, nano(*Loader().next_batch()), None, 1.0)

    def mini_step():
        training.train_step(prepared, optimizer, Loader(), accelerator, 1, 6e-4, 1.0)

    fns = {"NanoGPT forward + backward": nano_fwd_bwd, "MiniGPT forward + backward": mini_fwd_bwd,
           "NanoGPT step by hand": nano_step, "MiniGPT training.train_step": mini_step}
    fns = {name: repeated(fn, reps) for name, fn in fns.items()}
    times = interleaved(fns, device, warmup=1, rounds=args.rounds, iters=1, clock=args.clock)
    report.table(f"4. Python overhead at a toy shape (2 × 64, V=512, B=1, T=16; {args.clock} clock)",
                 ["call", "ms per call"])
    for name in fns:
        ms = per_call_ms(times, name, reps)
        report.row([name, f"{ms:.2f}"], {"part": "python", "call": name, "ms": ms})

    profiler = cProfile.Profile()
    profiler.enable()
    repeated(mini_step, reps)()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    text = "\n".join(line for line in out.getvalue().splitlines() if line.strip())
    report.note(f"cProfile, {reps} × training.train_step at the toy shape, by own time:\n\n```\n{text}\n```")


def main(argv=None) -> None:
    args = parse_args(argv)
    device = setup(args.device, args.seed, args.threads)
    report = Report(args.json, {"benchmark": "profile_step", "environment": environment(device), "args": vars(args)})
    env = report.data["environment"]
    print(f"# Where the CPU step's time goes — {env['device']}, torch {env['torch']}, transformers "
          f"{env['transformers']}, {env['date']}, load average {env['load_average']}\n\n`{env['command']}`")
    head_and_loss(args, device, report)
    small_costs(args, device, report)
    python_overhead(args, device, report)
    report.note(f"load average at the end: {environment(device)['load_average']}")


if __name__ == "__main__":
    main()
