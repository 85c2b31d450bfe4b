"""Pre-train MiniGPT (GPT-2 small and friends) with nanoGPT's recipe on Hugging Face Accelerate.

    minigpt train --config configs/tiny.yaml                                   # one process (CPU demo, minutes)
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml -m minigpt_hf train --config configs/gpt2-124m.yaml
    accelerate launch ... -m minigpt_hf train --config configs/gpt2-124m.yaml --resume_from_checkpoint latest

(``accelerate launch ... scripts/train.py ...`` is the same program.) Flags come from the argument dataclasses of
:mod:`minigpt_hf.training`; ``minigpt train --help`` lists them. Negative numbers may follow their flag with a space.
"""

from __future__ import annotations

from . import command


@command
def main(argv: list[str] | None = None) -> int:
    from ..arguments import parse_args

    args = parse_args(argv)  # before the trainer's imports: --help and bad flags answer at once
    from ..training import train

    return train(*args)
