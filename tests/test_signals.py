"""Signals before the first step (a clean stop: one line, exit 0, nothing half-made) and the acknowledgement of one
during the run (each process that gets it names the step it stops after)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import launch_env
from minigpt_hf import checkpoint as ckpt, training
from minigpt_hf.signals import StopOnSignal
from test_operations import run_args, train

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
