"""Export a MiniGPT checkpoint as a plain GPT-2 folder that stock transformers loads as ``GPT2LMHeadModel``.

    minigpt export out/gpt2-124m/checkpoints/step_000953 out/gpt2-124m-hf

No custom code and no ``trust_remote_code``: the folder works with vLLM, llama.cpp's ``convert_hf_to_gguf.py``, TGI,
ONNX tooling and lm-evaluation-harness. The 47 padding rows of the vocabulary are dropped (exact: padded ids are
never predicted).
"""

from __future__ import annotations


from ..arguments import ArgumentParser, model_folder
from . import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="minigpt export", description=__doc__)
    parser.add_argument("checkpoint", type=model_folder, help="a MiniGPT checkpoint or model folder")
    parser.add_argument("output", help="folder to write (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    from ..checkpoint import verify_folder
    from ..conversion import export_gpt2

    folder = export_gpt2(verify_folder(args.checkpoint), args.output, overwrite=args.overwrite)
    print(f"wrote {folder}: loads as GPT2LMHeadModel with AutoModelForCausalLM.from_pretrained, no custom code")
    return 0
