"""Sample from a MiniGPT checkpoint, from GPT-2 weights, or from a randomly initialised model.

    minigpt generate out/tiny/checkpoints/step_000800         # a trained checkpoint folder
    minigpt generate --from_gpt2 gpt2                          # OpenAI's weights (hub id or folder)
    minigpt generate --preset gpt2-124m                        # random init (the notes' Figure 3)

Defaults are the notes' sampling: 4 samples, top-k 50, 32 tokens in all, prompt "Hello, I'm a language model,".
"""

from __future__ import annotations


from ..arguments import DTYPES, VERIFY_HELP, ArgumentParser, model_folder, model_source
from . import command

PROMPT = "Hello, I'm a language model,"


def parse_args(argv):
    parser = ArgumentParser(prog="minigpt generate", description=__doc__)
    parser.add_argument("checkpoint", nargs="?", type=model_folder, help="a saved model folder (default: random init of --preset)")
    parser.add_argument("--from_gpt2", metavar="PATH", type=model_source, help="GPT-2 weights: hub id (gpt2, ...) or local folder")
    parser.add_argument("--preset", default="gpt2-124m", help="shape of the random model (default: gpt2-124m)")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--num_samples", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=32, help="total tokens per sample, prompt included")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="overrides --max_length")
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling, in (0, 1]")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="weight dtype (default: fp32)")
    parser.add_argument("--verify", action="store_true", help=VERIFY_HELP)
    args = parser.parse_args(argv)
    if args.checkpoint and args.from_gpt2:
        raise ValueError("pass a checkpoint folder or --from_gpt2, not both")
    if not args.prompt.strip():
        raise ValueError("--prompt is empty; give some text to continue")
    if args.num_samples < 1 or args.max_length < 1 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise ValueError("--num_samples, --max_length and --max_new_tokens must be at least 1")
    if args.temperature <= 0 or args.top_k < 0:
        raise ValueError(f"--temperature {args.temperature} must be > 0 and --top_k {args.top_k} at least 0")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top_p {args.top_p}: must be in (0, 1]")
    return args


def pick_device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} GPUs")
    return device


def load(args):
    import torch

    from ..configuration_minigpt import MiniGPTConfig
    from ..evaluation import load_model
    from ..modeling_minigpt import MiniGPTForCausalLM

    if args.from_gpt2:
        return MiniGPTForCausalLM.from_gpt2(args.from_gpt2)
    if args.checkpoint:
        return load_model(args.checkpoint, trust_remote_code=True, verify=args.verify)
    torch.manual_seed(args.seed)
    return MiniGPTForCausalLM(MiniGPTConfig.from_preset(args.preset))


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from ..evaluation import parse_dtype
    from ..tokenization import get_tokenizer

    device, dtype = pick_device(args.device), parse_dtype(args.dtype)
    model = load(args).to(device, dtype).eval()
    tokenizer = get_tokenizer()
    inputs = tokenizer([args.prompt] * args.num_samples, return_tensors="pt").to(device)
    length = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {"max_length": args.max_length}
    sampling = {} if args.greedy else {"top_k": args.top_k, "top_p": args.top_p, "temperature": args.temperature}
    torch.manual_seed(args.seed)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=not args.greedy, **sampling, **length)
    for i, sample in enumerate(out):
        print(f"sample {i}: {tokenizer.decode(sample, skip_special_tokens=True)}")
    return 0
