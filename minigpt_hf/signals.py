"""Stopping a training run on a signal (SIGTERM from SLURM, Kubernetes or a spot preemption; Ctrl-C).

Imports nothing heavy, so that ``minigpt train`` installs its handlers before torch and transformers load: a signal
during start-up (imports, data preparation, loading, compile) stops the run at once with one line and exit 0, and
nothing is half-made (data preparation keeps its finished shards for the next run, a checkpoint is never begun).
Once the first step runs, a signal asks the run to stop after the current optimizer step, with a checkpoint; each
process that receives it says so in one line, naming the step it will stop after. A second Ctrl-C exits at once.
After the last step (the final checkpoint written) a signal is taken with one line and the run ends as it would
have, exit 0: a scheduler's late SIGTERM does not turn a finished run into a killed one.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable


class StartupStopped(KeyboardInterrupt):
    """A signal arrived before the first training step: the run stops where it is, with nothing to save."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def say_stopped_at_startup(err: StartupStopped) -> int:
    """The one line of a run stopped during start-up (on each process that was signalled); its exit code, 0."""
    rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    print(f"{rank}stopped by {err} during start-up, before the first step: nothing was saved; run the same command "
          "again", file=sys.stderr, flush=True)
    return 0


class StopOnSignal:
    """The handlers of SIGTERM and SIGINT for one run: while `starting`, a signal raises :class:`StartupStopped`;
    after :meth:`running`, it is recorded (``received``) with the step that ``stop_step()`` names when it arrives
    (``at_step``), that step is announced, and the loop stops exactly there: the announcement and the stop can not
    disagree, wherever in the loop the signal lands."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, linger: bool = False):
        self.linger = linger  # keep the handlers installed after a finished run, until the process exits
        self.done = False
        self.received: int | None = None
        self.at_step: int | None = None  # the step announced when the signal arrived: the run stops after it
        self.starting = True
        self.prefix = ""  # "[rank R] " in a run of several processes
        self.stop_step: Callable[[], int] | None = None
        self._previous = {}

    def __enter__(self):
        if self._previous:
            raise RuntimeError("StopOnSignal is already installed")
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        if self.done and self.linger:  # a command's process, about to exit: a signal now changes nothing either
            import atexit

            # (Python puts its own handlers back to the default when it finalizes, the slow teardown of torch's
            # modules still ahead: SIGTERM is ignored from the exit on, the run's exit status stands)
            atexit.register(signal.signal, signal.SIGTERM, signal.SIG_IGN)
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def finished(self) -> None:
        """The run is over, its last checkpoint written: from now on a signal stops nothing and only says so (the
        process goes on to close its logs and exits as it would have)."""
        self.done = True

    def running(self, stop_step: Callable[[], int], rank: int | None = None) -> None:
        """From now on a signal stops the run after the step `stop_step()` names (with a checkpoint)."""
        self.stop_step, self.starting = stop_step, False
        self.prefix = f"[rank {rank}] " if rank is not None else ""

    def _handle(self, signum, frame):
        if self.done:
            if signum == signal.SIGINT and self.received == signal.SIGINT:  # Ctrl-C again: exit at once, also here
                print("\ninterrupted", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(130)
            self.received = signum
            print(f"{self.prefix}{signal.Signals(signum).name} received after the run finished: its last checkpoint is "
                  "written, nothing to stop (Ctrl-C again to exit at once)", file=sys.stderr, flush=True)
            return
        if self.starting:
            self.received = signum
            raise StartupStopped(signum)
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.received, self.at_step = signum, self.stop_step()
        print(f"{self.prefix}{signal.Signals(signum).name} received: stopping after step {self.at_step} with a "
              "checkpoint (Ctrl-C again to exit at once)", file=sys.stderr, flush=True)

    def due(self, step: int) -> bool:
        """Whether this process was signalled for a stop at `step` or before."""
        return self.at_step is not None and self.at_step <= step

    def agreed(self, accelerator, step: int) -> bool:
        """Whether the run stops at `step`: this process's signal is due, or (in a run of several processes, which
        must all stop at the same step) another's is."""
        if accelerator.num_processes == 1:
            return self.due(step)
        import torch

        flag = torch.tensor([float(self.due(step))], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item())
