"""MiniGPT vs GPT2LMHeadModel (SDPA), side by side in one process: training and generation speed.

(a) forward + backward (``--optimizer`` adds an AdamW step) on random tokens, tokens/s at the median step time;
    weights in fp32, autocast to ``--dtype`` when it is bf16/fp16 (as in training).
(b) ``generate()`` with the KV cache, batch sizes ``--gen_batches``, ``--new_tokens`` new tokens after a
    ``--prompt_len`` prompt: top-k 50 sampling and greedy; ``min_new_tokens = max_new_tokens`` so both models produce
    the same count. Weights cast to ``--dtype`` (as in inference). With ``--compile`` generation uses a static cache,
    which transformers compiles itself on accelerators (on CPU it runs the static cache eagerly).

The two models' measurements are interleaved (A×iters, B×iters, per round, ``--rounds`` rounds) so machine noise
hits both; the ratio is MiniGPT / GPT2 (higher is better): the median of the per-round ratios, with their range.

    python benchmarks/bench_model.py --device cpu                       # small shape, fp32
    python benchmarks/bench_model.py --device cuda --dtype bf16 --shape 124m --json out/bench_model.json
"""

from __future__ import annotations

import argparse

import torch

from _common import (
    DTYPES,
    EOT_ID,
    Formatter,
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
    train_step,
)


DECODINGS = {"top-k": ("top-k 50", dict(do_sample=True, top_k=50)), "greedy": ("greedy", dict(do_sample=False))}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    add_common_args(p)
    p.add_argument("--dtype", choices=list(DTYPES), help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--batch", type=int, help="training batch; default: 16 on cuda, 4 on cpu")
    p.add_argument("--seq_len", type=int, help="training sequence length; default: the shape's block size")
    p.add_argument("--optimizer", action="store_true", help="add an AdamW step to forward + backward")
    p.add_argument("--gen_batches", default="1,16", help="comma-separated generation batch sizes")
    p.add_argument("--prompt_len", type=int, default=16, help="random prompt tokens before the new ones")
    p.add_argument("--new_tokens", type=int, help="default: 256 on cuda, 64 on cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile for training; static cache for generate")
    p.add_argument("--iters", type=positive_int, default=3, help="timed training steps per model and round")
    p.add_argument("--gen_iters", type=positive_int, default=1, help="timed generate() calls per model and round")
    p.add_argument("--parts", default="train,generate", help="which parts to run: train, generate or both")
    p.add_argument("--decodings", default="top-k,greedy", help="generate(): top-k (50, sampling), greedy or both")
    p.set_defaults(rounds=5, warmup=2)
    args = p.parse_args()
    gpu = args.device == "cuda"
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.shape = args.shape or ("124m" if gpu else "small")
    args.batch = args.batch or (16 if gpu else 4)
    args.seq_len = args.seq_len or SHAPES[args.shape]["block_size"]
    args.new_tokens = args.new_tokens or (256 if gpu else 64)
    args.gen_batches = [int(b) for b in args.gen_batches.split(",")]
    args.parts = args.parts.split(",")
    if args.clock == "cpu" and gpu:
        p.error("--clock cpu measures CPU work; on cuda the kernels run asynchronously: use --clock wall")
    args.decodings = args.decodings.split(",")
    if not set(args.decodings) <= set(DECODINGS):
        p.error(f"--decodings takes top-k, greedy or top-k,greedy, got {','.join(args.decodings)}")
    if not set(args.parts) <= {"train", "generate"}:
        p.error(f"--parts takes train, generate or train,generate, got {','.join(args.parts)}")
    if "generate" in args.parts and args.prompt_len + args.new_tokens > SHAPES[args.shape]["block_size"]:
        p.error(f"--prompt_len + --new_tokens exceeds the {args.shape} block size {SHAPES[args.shape]['block_size']}")
    return args


def bench_train(args, device, report: Report) -> None:
    models = build_models(args.shape, device, args.loss_chunk_size)
    amp_dtype = None if args.dtype == "fp32" else DTYPES[args.dtype]
    batch = random_tokens(args.batch, args.seq_len, device)
    steps = {}
    for name, model in models.items():
        model.train()
        optimizer = None
        if args.optimizer:
            optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, fused=device.type == "cuda")
        scaler = torch.amp.GradScaler(device.type) if args.dtype == "fp16" else None
        step_model = torch.compile(model, dynamic=False) if args.compile else model
        steps[name] = lambda m=step_model, o=optimizer, s=scaler: train_step(m, o, batch, s, amp_dtype=amp_dtype)
    times = interleaved(steps, device, warmup=args.warmup, rounds=args.rounds, iters=args.iters, clock=args.clock)
    result = compare(times, work=args.batch * args.seq_len)
    what = "fwd+bwd+AdamW" if args.optimizer else "fwd+bwd"
    if args.loss_chunk_size:
        what += f" (MiniGPT loss_chunk_size {args.loss_chunk_size})"
    report.table(
        f"Training step ({what}), B={args.batch}, T={args.seq_len}, {args.dtype}{', compiled' if args.compile else ''}",
        ["part", "MiniGPT tok/s", "GPT2 tok/s", "ratio MiniGPT/GPT2", "ratio range over rounds",
         "first step s (Mini / GPT2)"],
    )
    report.row(
        [what, f"{result['MiniGPT']['per_s']:,.0f}", f"{result['GPT2']['per_s']:,.0f}", ratio_cell(result),
         spread_cell(result), f"{result['MiniGPT']['first_call_s']:.2f} / {result['GPT2']['first_call_s']:.2f}"],
        {"part": what, "batch": args.batch, "seq_len": args.seq_len, **result},
    )


def check_shape(tokens: torch.Tensor, expected: tuple[int, int]) -> None:
    """Both models must return exactly the prompt plus ``new_tokens`` tokens per row, or the comparison is unfair."""
    if tuple(tokens.shape) != expected:
        raise RuntimeError(f"generate() returned {tuple(tokens.shape)} tokens, expected {expected}")


def lm_head_positions_in_prefill(model, prompt, mask) -> int:
    """How many positions reach the LM head during generate()'s prefill: 1 when generate() passes
    ``logits_to_keep=1`` and the model honours it, the prompt length otherwise."""
    seen = []
    hook = model.lm_head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape[1]))
    try:
        model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=1, do_sample=False, pad_token_id=EOT_ID)
    finally:
        hook.remove()
    return seen[0]


def bench_generate(args, device, report: Report) -> None:
    models = {name: m.to(DTYPES[args.dtype]).eval() for name, m in build_models(args.shape, device).items()}
    report.table(
        f"generate(), {args.prompt_len}-token prompt + {args.new_tokens} new tokens, KV cache"
        f" ({'static' if args.compile else 'dynamic'}), {args.dtype}",
        ["batch", "decoding", "MiniGPT tok/s", "GPT2 tok/s", "ratio MiniGPT/GPT2", "ratio range over rounds",
         "first call s (Mini / GPT2)"],
    )
    for batch_size in args.gen_batches:
        prompt = random_tokens(batch_size, args.prompt_len, device)
        mask = torch.ones_like(prompt)
        expected_shape = (batch_size, args.prompt_len + args.new_tokens)
        for decoding, options in (DECODINGS[name] for name in args.decodings):
            kwargs = dict(
                input_ids=prompt,
                attention_mask=mask,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=EOT_ID,
                cache_implementation="static" if args.compile else None,
                **options,
            )
            calls = {
                name: (lambda m=m: check_shape(m.generate(**kwargs), expected_shape)) for name, m in models.items()
            }
            times = interleaved(calls, device, warmup=args.warmup, rounds=args.rounds,
                                iters=args.gen_iters, clock=args.clock)
            result = compare(times, work=batch_size * args.new_tokens)
            report.row(
                [batch_size, decoding, f"{result['MiniGPT']['per_s']:,.0f}", f"{result['GPT2']['per_s']:,.0f}",
                 ratio_cell(result), spread_cell(result),
                 f"{result['MiniGPT']['first_call_s']:.2f} / {result['GPT2']['first_call_s']:.2f}"],
                {"part": "generate", "batch": batch_size, "decoding": decoding, "new_tokens": args.new_tokens,
                 "prompt_len": args.prompt_len, **result},
            )
    prompt = random_tokens(1, args.prompt_len, device)
    positions = {name: lm_head_positions_in_prefill(m, prompt, torch.ones_like(prompt)) for name, m in models.items()}
    report.set("lm_head_positions_in_prefill", positions)
    report.note(
        "LM-head positions in the prefill of generate() (1 = logits_to_keep honoured): "
        + ", ".join(f"{name} {n}" for name, n in positions.items())
    )


def main() -> None:
    args = parse_args()
    device = setup(args.device, args.seed, args.threads)
    shape = SHAPES[args.shape]
    report = Report(args.json, {"benchmark": "bench_model", "environment": environment(device), "args": vars(args)})
    env = report.data["environment"]
    print(f"# MiniGPT vs GPT2LMHeadModel (SDPA) — {env['device']}, torch {env['torch']}, "
          f"transformers {env['transformers']}, {env['date']}")
    print(f"\nshape {args.shape}: {shape['n_layer']} layers × {shape['n_head']} heads × {shape['n_embd']} wide, "
          f"block {shape['block_size']}; vocabulary MiniGPT 50304 (padded), GPT2 50257. "
          f"{args.rounds} interleaved rounds; ratio = MiniGPT / GPT2 throughput, higher is better.")
    if "train" in args.parts:
        bench_train(args, device, report)
    if "generate" in args.parts:
        bench_generate(args, device, report)


if __name__ == "__main__":
    main()
