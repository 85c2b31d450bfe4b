"""Signals before the first step (a clean stop: one line, exit 0, nothing half-made) and the acknowledgement of one
during the run (each process that gets it names the step it stops after)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import torch
from safetensors.torch import load_file

from helpers import launch_env
from minigpt_hf import checkpoint as ckpt, training
from minigpt_hf.signals import StopOnSignal
from test_operations import losses, run_args, straight, train  # noqa: F401 (straight: the fixture)

STARTUP_LINE = "stopped by SIGTERM during start-up, before the first step: nothing was saved; run the same command again"


def signalled_at(monkeypatch, module, name):
    """`module.name`, patched to send this process SIGTERM and then go on (as a scheduler's signal arrives)."""
    real = getattr(module, name)

    def patched(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, patched)


@pytest.mark.parametrize("where", ["build_model", "start_trackers"])
def test_a_signal_during_setup_stops_cleanly_with_one_line(shakespeare, tmp_path, monkeypatch, capsys, where):
    import minigpt_hf.trackers as trackers

    out = tmp_path / "run"
    signalled_at(monkeypatch, training if where == "build_model" else trackers, where)
    assert train(run_args(shakespeare, out)) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "SIGTERM" in line]
    assert lines == [STARTUP_LINE] and "Traceback" not in captured.err, captured.err[-3000:]
    assert "step 0 | loss" not in captured.out
    assert ckpt.list_checkpoints(out) == [] and not list((out / "checkpoints").glob(".*"))  # nothing half-made
    monkeypatch.undo()
    assert train(run_args(shakespeare, out)) == 0  # the lock was released: the same command runs
    assert [step for step, _ in ckpt.list_checkpoints(out)] == [2, 4]


@pytest.mark.slow
def test_sigterm_during_the_imports_is_a_clean_exit(shakespeare, tmp_path):
    """A scheduler's SIGTERM a moment after the start: torch and transformers are still loading."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "minigpt_hf", "train", *run_args(shakespeare, out)],
                            env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert [line for line in stderr.splitlines() if "SIGTERM" in line] == [STARTUP_LINE]
    assert "Traceback" not in stderr and "step 0 | loss" not in stdout
    assert ckpt.list_checkpoints(out) == []


def test_a_signal_in_the_run_is_acknowledged_by_each_process_naming_the_stop_step(capsys):
    with StopOnSignal() as stop:
        stop.running(lambda: 17, rank=1)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM is taken quietly
        assert stop.received == signal.SIGTERM
    assert capsys.readouterr().err.splitlines() == [
        "[rank 1] SIGTERM received: stopping after step 17 with a checkpoint (Ctrl-C again to exit at once)"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def signal_on_call(monkeypatch, owner, name, call, when="before"):
    """`owner.name`, patched so that its `call`-th call (from 1) runs the SIGTERM handler just before (or just after)
    the real one: a signal landing at that exact moment of the loop."""
    real, calls = getattr(owner, name), []

    def patched(*args, **kwargs):
        calls.append(1)
        stop = args[0] if isinstance(args[0], StopOnSignal) else None
        handler = (stop or signal_on_call.stop)._handle
        if len(calls) == call and when == "before":
            handler(signal.SIGTERM, None)
        result = real(*args, **kwargs)
        if len(calls) == call and when == "after":
            handler(signal.SIGTERM, None)
        return result

    monkeypatch.setattr(owner, name, patched)


# where the signal lands -> (what to patch, which call, before or after it, the step the run must stop after)
MOMENTS = {
    "at the end of train step 2": ("train_step", 3, "after", 3),  # (train steps count from step 0)
    "at the stop check of step 3, before the flag is read": ("agreed", 3, "before", 4),
    "at the stop check of step 3, after the flag is read": ("agreed", 3, "after", 4),
    "inside train step 3": ("train_step", 4, "before", 4),
    "inside the save of step 2": ("save_checkpoint", 1, "before", 3),
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_the_step_a_signal_announces_is_the_step_the_run_stops_after(straight, shakespeare, tmp_path, monkeypatch,
                                                                     capsys, moment):
    """Wherever in the loop SIGTERM lands, the step the handler announces is the step the loop stops after (and
    checkpoints), and the resumed run equals the uninterrupted one. (A signal landing between the stop check and
    the line that moved the loop's step on used to be announced for one step and honoured at the next.)"""
    name, call, when, expected = MOMENTS[moment]
    real_enter = StopOnSignal.__enter__

    def enter(self):  # the run's handler object, for the patches of module functions
        signal_on_call.stop = self
        return real_enter(self)

    monkeypatch.setattr(StopOnSignal, "__enter__", enter)
    signal_on_call(monkeypatch, StopOnSignal if name == "agreed" else training, name, call, when)
    out = tmp_path / "run"
    argv = run_args(shakespeare, out, "--keep_last", "0", steps=8)
    assert train(argv) == 0
    captured = capsys.readouterr()
    assert f"SIGTERM received: stopping after step {expected} with a checkpoint" in captured.err, captured.err[-2000:]
    assert f"stopped by SIGTERM at step {expected}: checkpoint {ckpt.checkpoint_path(out, expected)}" in captured.out
    assert ckpt.list_checkpoints(out)[-1][0] == expected
    monkeypatch.undo()
    assert train([*argv, "--resume_from_checkpoint", "latest"]) == 0
    assert losses(out) == losses(straight)
    a, b = (load_file(str(d / "checkpoints" / "step_000008" / "model.safetensors")) for d in (out, straight))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_signal_after_the_last_step_leaves_a_finished_run_finished(shakespeare, tmp_path, monkeypatch, capsys):
    """A scheduler's late SIGTERM, while the run closes its logs: one line, exit 0, the final checkpoint there."""
    from accelerate import Accelerator

    signalled_at(monkeypatch, Accelerator, "end_training")
    out = tmp_path / "run"
    assert train(run_args(shakespeare, out)) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "SIGTERM" in line] == [
        "SIGTERM received after the run finished: its last checkpoint is written, nothing to stop (Ctrl-C again to "
        "exit at once)"], err[-2000:]
    assert [step for step, _ in ckpt.list_checkpoints(out)] == [2, 4]


def test_a_commands_handlers_stay_until_the_process_exits(capsys):
    """`minigpt train` keeps its handlers after a finished run (the process is about to exit: a SIGTERM during the
    interpreter's shutdown would end it with -15); a library caller's are put back."""
    try:
        with StopOnSignal(linger=True) as stop:
            stop.running(lambda: 3)
            stop.finished()
        os.kill(os.getpid(), signal.SIGTERM)  # taken by the lingering handler: this process goes on
        assert "SIGTERM received after the run finished" in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with StopOnSignal() as stop:
        stop.finished()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_a_late_sigterm_to_a_finished_run_is_exit_0(shakespeare, tmp_path, delay):
    """From the final checkpoint to the process's very end (closing the logs, the interpreter's teardown, where
    Python itself has put the default handlers back) a SIGTERM leaves the exit status 0."""
    from test_operations import wait_for

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "minigpt_hf", "train", *run_args(shakespeare, out)],
                            env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "log.txt", "step 4 | saved", proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert [step for step, _ in ckpt.list_checkpoints(out)] == [2, 4]
