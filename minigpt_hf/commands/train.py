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
    from . import AS_PROGRAM  # (its value now: set by `minigpt`'s dispatch)

    args = parse_args(argv)  # before the trainer's imports: --help and bad flags answer at once
    # a signal from here on, during the imports too, is a clean stop; after the run one line, and in the program's
    # own process so until it exits (the interpreter's shutdown included)
    with StopOnSignal(linger=argv is None or AS_PROGRAM) as stop:
        try:
            from ..training import train
        except StartupStopped as err:
            return say_stopped_at_startup(err)
        return train(*args, stop=stop)
