"""What a run over several processes and machines needs beyond Accelerate: a bounded wait for a lost peer, the
check that every machine sees the same run folder and the same data, and one line when a peer is gone.

Per node and per run (README, "Several machines"): the embedded corpus is prepared once per node, by each node's
first process (a shared ``--data_dir`` is prepared once, the others wait on its ``.prepare.lock`` and reuse it);
the run lock, the sweep of leftovers, ``log.txt``, TensorBoard and the checkpoints' model files are the run's,
written by the global main process only, into an ``--output_dir`` that every machine must share.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

from . import checkpoint as ckpt

RESUME_HINT = "resume with the same command and --resume_from_checkpoint latest"
# what gloo (and the TCP store) say when the other end of a connection is gone, or did not answer in time
_LOST = re.compile(r"connection (closed|reset) by peer|broken pipe|connection refused", re.IGNORECASE)
_TIMEOUT = re.compile(r"timed out|timeout", re.IGNORECASE)
_PEER = re.compile(r"\[([0-9a-fA-F.:]+)\]:(\d+)")


def process_group_kwargs(seconds: int):
    """Accelerate's ``InitProcessGroupKwargs`` with a ``timeout`` of ``seconds`` for every collective.

    ``InitProcessGroupKwargs.to_kwargs()`` passes on only values that differ from its class defaults, and its default
    timeout is NCCL's 600 s; gloo's default is 1800 s, so a plain ``timeout=600`` would silently mean 30 minutes on
    CPU processes. The returned handler always passes the timeout on.
    """
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    handler = InitProcessGroupKwargs(timeout=timedelta(seconds=seconds))
    handler.to_kwargs = lambda: {"timeout": handler.timeout}
    return handler


def check_machines_agree(accelerator, output_dir: str, data_dir: str) -> None:
    """Every process sees the run folder the main process locked, and the same data; else a ValueError on every
    rank (so that all stop at setup, not at the first save), naming the processes that differ and the fix.

    The main process holds ``{output_dir}/run.lock``, with its owner (pid, host, start time) inside; a process that
    reads another owner there, or no file, is on another filesystem. The data is compared by the hash of the
    manifest of each process's ``data_dir`` (node-local data folders are fine when they hold the same shards).
    """
    from accelerate.utils import broadcast_object_list, gather_object

    from .data import manifest_hash

    if accelerator.num_processes == 1:
        return
    lock = Path(output_dir) / ckpt.LOCK_NAME
    owner = broadcast_object_list([lock.read_text(encoding="utf-8") if accelerator.is_main_process else None])[0]
    try:
        sees = lock.read_text(encoding="utf-8") == owner
    except OSError:
        sees = False
    try:
        data = manifest_hash(data_dir)
    except (OSError, ValueError) as err:
        data = f"error: {err}"
    everyone = gather_object([(accelerator.process_index, socket.gethostname(), sees, data)])
    apart = [f"rank {rank} on {host}" for rank, host, sees, _ in everyone if not sees]
    if apart:
        raise ValueError(f"{', '.join(apart)} does not see the {ckpt.LOCK_NAME} that rank 0 holds in {output_dir} "
                         "(another filesystem, or another --output_dir there); every machine must write into the "
                         "same folder: put --output_dir on a filesystem they all share and pass the same path")
    broken = [(rank, host, data) for rank, host, _, data in everyone if data.startswith("error: ")]
    if broken:
        rank, host, data = broken[0]
        raise ValueError(f"rank {rank} on {host}: {data.removeprefix('error: ')}")
    other = [f"rank {rank} on {host}" for rank, host, _, data in everyone if data != everyone[0][3]]
    if other:
        raise ValueError(f"--data_dir holds other data for {', '.join(other)} than for rank 0 (the manifests "
                         "differ); prepare the same shards on every machine, or use one shared --data_dir")


def lost_peer_line(err: BaseException, step: int, output_dir: str, timeout: int) -> str | None:
    """The one line for a collective that failed because another process died or hung, or None when ``err`` is
    something else. It names what happened (a lost peer, with its address when gloo gives one, or the timeout),
    the step, and the newest finished checkpoint with the command that resumes from it."""
    import torch.distributed as dist

    text = " ".join(str(err).split())
    if not (isinstance(err, dist.DistError) or "gloo" in text.lower()):  # not from a collective
        return None
    peer = _PEER.search(text)
    if _LOST.search(text):
        what = (f"lost a peer at step {step}: " + (f"{peer.group(1)}:{peer.group(2)} closed the connection" if peer else
                "a connection closed") + " (another process or machine of the run died)")
    elif _TIMEOUT.search(text):
        what = (f"timed out at step {step}: no answer from another process within --ddp_timeout {timeout} s (a "
                "machine hung or is unreachable)")
    else:
        return None
    finished = ckpt.list_checkpoints(output_dir)
    last = (f"the last finished checkpoint is {finished[-1][1]}; {RESUME_HINT}" if finished else
            f"no finished checkpoint in {output_dir} yet; start again with the same command (--resume_from_checkpoint "
            "latest starts at step 0 then)")
    return f"{what}; {last}"


def report_lost_peer(err: BaseException, run) -> bool:
    """Print :func:`lost_peer_line` on stderr (and, on the main process, into ``log.txt``) and close the trackers;
    False (nothing printed) when ``err`` is not a lost peer or a timeout."""
    train_args = run.args[2]
    line = lost_peer_line(err, run.step, train_args.output_dir, train_args.ddp_timeout)
    if line is None:
        return False
    accelerator = run.accelerator
    from tqdm import tqdm

    tqdm.write(f"[rank {accelerator.process_index}] {line}", file=sys.stderr)  # below the progress bar, if any
    if accelerator.is_main_process:
        with (Path(train_args.output_dir) / ckpt.LOG_NAME).open("a", encoding="utf-8") as f:
            f.write(line + "\n")
    for tracker in accelerator.trackers:  # keep what was logged up to the failure (TensorBoard buffers events)
        tracker.finish()
    return True
