"""Convert an HF GPT-2 checkpoint (hub id such as ``gpt2``, or a local folder) into a MiniGPT model folder.

    minigpt convert gpt2 out/gpt2-minigpt --vocab_size 50304

The folder is a complete ``save_pretrained`` layout (safetensors, config, modeling code, tokenizer): it loads with
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` even where minigpt_hf is not installed.
"""

from __future__ import annotations


from ..arguments import ArgumentParser, model_source
from . import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="minigpt convert", description=__doc__)
    parser.add_argument("source", type=model_source, help="GPT-2 checkpoint: a hub id (gpt2, gpt2-medium, ...) or a local folder")
    parser.add_argument("output", help="folder to write (must not exist unless --overwrite)")
    parser.add_argument("--vocab_size", type=int, default=None, help="pad the vocabulary, e.g. 50304 (default: keep)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    from ..checkpoint import save_model_folder
    from ..modeling_minigpt import MiniGPTForCausalLM

    model = MiniGPTForCausalLM.from_gpt2(args.source, vocab_size=args.vocab_size)
    folder = save_model_folder(model, args.output, overwrite=args.overwrite)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {folder} ({n_params / 1e6:.1f}M parameters, vocab {model.config.vocab_size})")
    return 0
