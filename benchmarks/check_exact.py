"""Bit-exactness of MiniGPT's fast loss on this device: the loss and every gradient of a training forward + backward
through ``CausalLMCrossEntropy`` against the same model computing transformers' ``ForCausalLMLoss`` (the path before
issue 20), compared with ``torch.equal``; eager, fp32 and 16-bit autocast, logits returned and not
(``return_logits``). tests/test_train_step_exact.py pins this on the CPU; this script checks the device's own
kernels (CUDA's log_softmax written in place, row blocks of 256 MB). Exit status 1 if anything differs.

    python benchmarks/check_exact.py --device cuda          # 124M (gpt2-124m preset), B=8, T=1024
    python benchmarks/check_exact.py --device cpu --shape tiny
"""

from __future__ import annotations

import argparse
import sys

import torch

from _common import (DTYPES, SHAPES, Formatter, Report, build_model, environment, hf_causal_lm_loss, random_tokens,
                     setup)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", choices=list(SHAPES), help="default: 124m on cuda, small on cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtypes", default="fp32,bf16,fp16", help="comma-separated: fp32 and autocast dtypes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    args.shape = args.shape or ("124m" if args.device == "cuda" else "small")
    return args


def loss_and_grads(model, x, y, amp_dtype, **kwargs):
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = model(x, shift_labels=y, **kwargs).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup(args.device, args.seed)
    report = Report(args.json, {"benchmark": "check_exact", "environment": environment(device), "args": vars(args)})
    env = report.data["environment"]
    print(f"# MiniGPT's fast loss vs transformers' ForCausalLMLoss, bit for bit — {env['device']}, shape "
          f"{args.shape}, B={args.batch}, T={SHAPES[args.shape]['block_size']}")
    report.table("Loss and gradients", ["dtype", "return_logits", "loss equal", "gradients equal",
                                        "largest gradient difference"])
    fast = build_model("MiniGPT", args.shape, device).train()
    generic = build_model("MiniGPT", args.shape, device).train()
    generic.load_state_dict(fast.state_dict())
    generic.loss_function = hf_causal_lm_loss
    window = random_tokens(args.batch, SHAPES[args.shape]["block_size"] + 1, device)
    x, y = window[:, :-1].contiguous(), window[:, 1:].contiguous()
    exact = True
    for dtype in args.dtypes.split(","):
        amp_dtype = None if dtype == "fp32" else DTYPES[dtype]
        ref_loss, ref_grads = loss_and_grads(generic, x, y, amp_dtype)
        for return_logits in (True, False):
            loss, grads = loss_and_grads(fast, x, y, amp_dtype, return_logits=return_logits)
            same_loss = torch.equal(loss, ref_loss)
            same = [torch.equal(grads[name], ref_grads[name]) for name in grads]
            worst = max((grads[name] - ref_grads[name]).abs().max().item() for name in grads)
            exact = exact and same_loss and all(same)
            report.row([dtype, return_logits, same_loss, f"{sum(same)}/{len(same)}", f"{worst:.3g}"],
                       {"dtype": dtype, "return_logits": return_logits, "loss_equal": same_loss,
                        "gradients_equal": sum(same), "gradients": len(same), "largest_difference": worst})
    report.set("exact", exact)
    report.note("bit-identical" if exact else "NOT bit-identical")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
