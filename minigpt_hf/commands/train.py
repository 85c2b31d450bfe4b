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

    from ..signals import StartupStopped, StopOnSignal, say_stopped_at_startup

    args = parse_args(argv)  # before the trainer's imports: --help and bad flags answer at once
    with StopOnSignal() as stop:  # and a signal from here on, during the imports too, is a clean stop
        try:
            from ..training import train
        except StartupStopped as err:
            return say_stopped_at_startup(err)
        return train(*args, stop=stop)
