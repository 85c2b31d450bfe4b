#!/usr/bin/env python
"""Sample from a MiniGPT checkpoint, from GPT-2 weights, or from a randomly initialised model.

    python scripts/generate.py out/tiny/checkpoints/step_000300         # a trained checkpoint folder
    python scripts/generate.py --from_gpt2 gpt2                          # OpenAI's weights (hub id or folder)
    python scripts/generate.py --preset gpt2-124m                        # random init, as the notes' Figure 3

Defaults are the notes' sampling: 4 samples, top-k 50, 32 tokens in all, prompt "Hello, I'm a language model,".
"""

import argparse

import torch

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM, get_tokenizer
from minigpt_hf.cli import parse_dtype, run

PROMPT = "Hello, I'm a language model,"


def load_model(args):
    if args.checkpoint and args.from_gpt2:
        raise ValueError("pass a checkpoint folder or --from_gpt2, not both")
    if args.from_gpt2:
        return MiniGPTForCausalLM.from_gpt2(args.from_gpt2)
    if args.checkpoint:
        from pathlib import Path

        from transformers import AutoModelForCausalLM

        if not (Path(args.checkpoint) / "config.json").exists():
            raise FileNotFoundError(f"{args.checkpoint} is not a model folder (no config.json); pass a checkpoint")
        return AutoModelForCausalLM.from_pretrained(args.checkpoint, trust_remote_code=True)
    torch.manual_seed(args.seed)
    return MiniGPTForCausalLM(MiniGPTConfig.from_preset(args.preset))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="a saved model folder (default: random init of --preset)")
    parser.add_argument("--from_gpt2", metavar="PATH", help="GPT-2 weights: hub id (gpt2, ...) or local folder")
    parser.add_argument("--preset", default="gpt2-124m", help="shape of the random model (default: gpt2-124m)")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--num_samples", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=32, help="total tokens per sample, prompt included")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="overrides --max_length")
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16")
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.max_length < 1 or args.temperature <= 0:
        raise ValueError("--num_samples and --max_length must be positive and --temperature > 0")

    model = load_model(args).to(args.device, parse_dtype(args.dtype)).eval()
    tokenizer = get_tokenizer()
    inputs = tokenizer([args.prompt] * args.num_samples, return_tensors="pt").to(args.device)
    length = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {"max_length": args.max_length}
    sampling = {} if args.greedy else {"top_k": args.top_k, "top_p": args.top_p, "temperature": args.temperature}
    torch.manual_seed(args.seed)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=not args.greedy, **sampling, **length)
    for i, sample in enumerate(out):
        print(f"sample {i}: {tokenizer.decode(sample, skip_special_tokens=True)}")


if __name__ == "__main__":
    run(main)
