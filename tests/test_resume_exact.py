"""SIGTERM at random steps and sub-step moments, then resume: every checkpoint the interrupted run writes, before and
after the stop, equals the one an uninterrupted run that saves every step wrote at that step — the weights, the
optimizer's state, the RNG states, the loader's position — and so do the float32 losses of every step.

(Issue 18: one resume in 20 was reported non-exact. This test, run many more times than here
(``MINIGPT_SIGTERM_TRIALS=100 pytest tests/test_resume_exact.py -k random``), never reproduced it with one thread
count throughout. The one cause found that gives the report's signature — the losses still equal for a few steps
after the resume, then ~1e-6 apart, the weights drifting — is a resumed CPU process with another intra-op thread
count than the run had (another machine, OMP_NUM_THREADS, a scheduler's cpuset): a CPU run now keeps its
checkpoint's count, see the last two tests.)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from helpers import launch_env
from minigpt_hf import checkpoint as ckpt, training
from minigpt_hf.commands import train as train_command
from minigpt_hf.signals import StopOnSignal
from test_operations import losses, one_line_error, run_args, straight, train, wait_for  # noqa: F401 (straight: the fixture)

STEPS = 12
# dropout on (the RNG matters), evaluation and samples on their own schedules between the saves
EXTRA = ("--keep_last", "0", "--eval_every", "3", "--sample_every", "4")


def args(data_dir, out, *extra):
    return run_args(data_dir, out, *EXTRA, *extra, steps=STEPS)


@pytest.fixture(scope="module")
def every_step(shakespeare, tmp_path_factory):
    """The uninterrupted run, with a checkpoint after every step."""
    out = tmp_path_factory.mktemp("every_step")
    assert train(args(shakespeare, out, "--save_every", "1")) == 0
    return out


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def parts(path) -> dict:
    state = json.loads((path / ckpt.TRAINER_STATE_NAME).read_text())
    return {
        "weights": load_file(str(path / "model.safetensors")),
        "optimizer": torch.load(path / "training_state" / "optimizer.bin", weights_only=False),
        "rng": torch.load(path / "training_state" / "random_states_0.pkl", weights_only=False),
        "loader": state["loader_state"],
        "step": (state["step"], state["tokens_seen"], state["skipped_steps"]),
    }


def differences(reference, out) -> list[str]:
    """What differs between each checkpoint of `out` and the reference's checkpoint of the same step."""
    found = []
    for step, path in ckpt.list_checkpoints(out):
        ours, theirs = parts(path), parts(ckpt.checkpoint_path(reference, step))
        found += [f"step {step}: {name}" for name in ours if not same(ours[name], theirs[name])]
    mine, straight = losses(out), losses(reference)
    found += [f"loss of step {s}: {mine.get(s)!r} != {straight[s]!r}" for s in straight if mine.get(s) != straight[s]]
    return found


def check_exact(every_step, out, stop_step: int, context: str = "") -> None:
    steps = [step for step, _ in ckpt.list_checkpoints(out)]
    assert stop_step in steps and steps[-1] == STEPS, f"{context}{steps}"
    found = differences(every_step, out)
    assert found == [], f"{context}{found}"


@pytest.mark.slow
def test_random_sigterms_of_a_real_process_resume_exactly(every_step, shakespeare, tmp_path):
    """SIGTERM to a real process at a random step, at a random moment within it (the forward, the backward, the
    optimizer, an evaluation, a sample, a save), then the same command with --resume_from_checkpoint latest."""
    trials = int(os.environ.get("MINIGPT_SIGTERM_TRIALS", "5"))
    seed = int(os.environ.get("MINIGPT_SIGTERM_SEED", str(random.randrange(10**6))))
    rng = random.Random(seed)
    stops = []
    for trial in range(trials):
        out = tmp_path / f"trial{trial}"
        argv = args(shakespeare, out, "--save_every", "5")
        proc = subprocess.Popen([sys.executable, "-m", "minigpt_hf", "train", *argv], env=launch_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        after = rng.randrange(STEPS - 3)
        wait_for(out / "log.txt", f"step {after} | loss", proc)
        time.sleep(rng.uniform(0, 0.4))  # a step here takes ~0.1-0.3 s: anywhere in the next one or two
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr[-3000:]
        (line,) = [line for line in stdout.splitlines() if line.startswith("stopped by SIGTERM at step ")]
        stop_step = int(line.split(" at step ")[1].split(":")[0])
        assert f"SIGTERM received: stopping after step {stop_step} with a checkpoint" in stderr
        stops.append(stop_step)
        assert train([*argv, "--resume_from_checkpoint", "latest"]) == 0
        check_exact(every_step, out, stop_step, f"trial {trial} (MINIGPT_SIGTERM_SEED={seed}), stopped at step "
                                                f"{stop_step}: ")
    print(f"{trials} SIGTERMs (seed {seed}), stopped after steps {stops}: every resume exact")


# where in the loop the signal lands (in-process, at an exact moment): (module, function, which of its calls)
MOMENTS = {
    "during an evaluation": (training, "evaluate", 3),  # step 6's (the first is step 0's)
    "during a sample": (training, "generate_samples", 2),  # step 4's
    "in the middle of a save": (ckpt, "write_trainer_state", 1),  # step 5's: its RNG and optimizer files written
    "at the start of a train step": (training, "train_step", 7),  # step 6
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_sigterm_at_each_moment_of_a_step_resumes_exactly(every_step, shakespeare, tmp_path, monkeypatch, moment):
    module, name, call = MOMENTS[moment]
    real, calls, handlers = getattr(module, name), [], []
    real_enter = StopOnSignal.__enter__

    def enter(self):
        handlers.append(self)
        return real_enter(self)

    def signalled(*a, **k):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)  # the real handler, run by Python at its next bytecode
        return real(*a, **k)

    monkeypatch.setattr(StopOnSignal, "__enter__", enter)
    monkeypatch.setattr(module, name, signalled)
    out = tmp_path / "run"
    argv = args(shakespeare, out, "--save_every", "5")
    assert train(argv) == 0
    stop_step = handlers[0].at_step
    assert stop_step is not None and stop_step < STEPS
    monkeypatch.undo()
    assert train([*argv, "--resume_from_checkpoint", "latest"]) == 0
    check_exact(every_step, out, stop_step)


def test_a_cpu_resume_keeps_the_runs_thread_count(straight, shakespeare, tmp_path, capsys):
    """On CPU the float sums (the gradient norm, the reductions of the backward) are split by thread: a process with
    another intra-op thread count differs in the last bit and then drifts (the losses of a few steps still equal,
    then ~1e-6 apart). A resumed run takes the checkpoint's count, whatever this process's default is (another
    machine, another OMP_NUM_THREADS, a scheduler's cpuset), and says so."""
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    for step in (6, 8):
        shutil.rmtree(ckpt.checkpoint_path(out, step))
    assert json.loads((ckpt.checkpoint_path(out, 4) / ckpt.TRAINER_STATE_NAME).read_text())["cpu_threads"] == 1
    argv = run_args(shakespeare, out, "--keep_last", "0", "--resume_from_checkpoint", "latest", steps=8)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # this process's default: 2 threads (the run had 1)
    try:
        assert train_command.main(argv) == 0
        assert torch.get_num_threads() == 2  # put back after the run
    finally:
        torch.set_num_threads(threads)
    assert "1 CPU thread per process, as the checkpoint's run had (this process had 2)" in capsys.readouterr().out
    assert differences(straight, out) == []


def test_another_thread_count_on_resume_is_a_recipe_change(straight, shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    argv = run_args(shakespeare, out, "--keep_last", "0", "--resume_from_checkpoint", "latest", steps=10)
    assert train([*argv, "--cpu_threads", "2"]) == 2
    err = one_line_error(capsys)
    assert "step_000008 was trained with --cpu_threads 1 and this run asks for 2" in err
    assert "leave out --cpu_threads" in err and "--allow_recipe_change" in err
    assert ckpt.list_checkpoints(out)[-1][0] == 8  # nothing written
    assert train([*argv, "--cpu_threads", "2", "--allow_recipe_change"]) == 0
    assert "recipe change on resume (--allow_recipe_change): cpu_threads 1 -> 2" in capsys.readouterr().out
    state = json.loads((ckpt.checkpoint_path(out, 10) / ckpt.TRAINER_STATE_NAME).read_text())
    assert state["cpu_threads"] == 2


def test_a_resume_from_latest_says_where_it_resumed_and_nothing_else(straight, shakespeare, tmp_path):
    """(The thread count's line once took the place of the if/elif after "resumed from": every resume from
    `latest` also logged "no checkpoint ... yet: starting at step 0".)"""
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    shutil.rmtree(ckpt.checkpoint_path(out, 8))
    assert train(run_args(shakespeare, out, "--keep_last", "0", "--resume_from_checkpoint", "latest", steps=8)) == 0
    log = (out / "log.txt").read_text()
    assert f"resumed from {ckpt.checkpoint_path(out, 6)} at step 6" in log
    assert "no checkpoint in" not in log and "CPU thread" not in log  # the same count as the run's: no line
