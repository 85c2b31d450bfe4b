"""Several machines, on one host: one ``accelerate launch --num_machines M --machine_rank R`` per machine, meeting on
127.0.0.1 and sharing one output folder as nodes share a parallel file system.

A healthy run equals the same run on one machine; data preparation is per node, the lock, sweep, log and saves are
the run's; a machine that dies or hangs ends the run within ``--ddp_timeout`` with one line on every survivor, and
``--resume_from_checkpoint latest`` finishes it as if nothing happened; ``accelerate launch --max_restarts`` restarts
a run whose worker was killed, without a hand on it.
"""

import contextlib
import json
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from helpers import free_port, launch_cmd, launch_env
from minigpt_hf import checkpoint as ckpt
from minigpt_hf import distributed
from minigpt_hf.commands import train as train_command

SMALL = ["--preset", "tiny", "--n_layer", "2", "--n_embd", "64", "--block_size", "64"]
STEPS = 12
TIMEOUT = 15  # --ddp_timeout of the runs that lose a machine: generous for a loaded 2-core CI box


def run_args(data_dir, out, *extra):
    """12 steps of the small model with dropout (the RNG matters): B=2 x T=32, 256 tokens per step (grad_accum 2
    on 2 processes), checkpoints at 4, 8 and 12; evaluation and samples only at the end."""
    return [*SMALL, "--data_dir", str(data_dir), "--micro_batch_size", "2", "--seq_len", "32",
            "--total_batch_size", "256", "--max_steps", str(STEPS), "--warmup_steps", "1", "--max_lr", "1e-3",
            "--min_lr", "1e-4", "--mixed_precision", "no", "--eval_every", "1000", "--eval_steps", "1",
            "--sample_every", "1000", "--sample_max_length", "12", "--num_samples", "1", "--save_every", "4",
            "--dropout", "0.1", "--keep_last", "0", "--output_dir", str(out), *extra]


# ----------------------------------------------------------------------------------------------------------------------
# machines as process trees


def start_machines(argvs, processes_per_machine=1, extra=(), env=None) -> list[subprocess.Popen]:
    """One launcher per machine (``argvs[r]`` is machine r's trainer command), all meeting at one port. Under c10d
    every launcher on this one host could host the rendezvous; machine 0 is given the port before the others
    start (on a cluster only machine 0 has that address)."""
    port, machines = free_port(), len(argvs)

    def start(rank):
        return subprocess.Popen(launch_cmd("train", argvs[rank], num_processes=machines * processes_per_machine,
                                           num_machines=machines, machine_rank=rank, port=port, extra=extra),
                                env=launch_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    procs = [start(0)]
    if "c10d" in extra:
        deadline = time.monotonic() + 120
        while procs[0].poll() is None and time.monotonic() < deadline and not any(
                c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.net_connections("tcp")):
            time.sleep(0.1)
    return procs + [start(rank) for rank in range(1, machines)]


def finish(procs, timeout=300) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of every launcher; a machine that does not finish in time fails the test."""
    results, deadline = [], time.monotonic() + timeout
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            results.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                signal_machine(proc, signal.SIGKILL)
                proc.communicate()
    return results


def signal_machine(proc: subprocess.Popen, sig) -> list[int]:
    """Send ``sig`` to a launcher and all its workers, as a node that dies (SIGKILL) or hangs (SIGSTOP). The
    workers run in sessions of their own (torch's launcher starts them so): a process group would miss them."""
    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:  # already gone
        return []
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)
    return [process.pid for process in tree]


def wait_for(path: Path, text: str, procs, timeout=240, after: int = 0):
    """Until ``text`` is in ``path`` (past its first ``after`` characters)."""
    deadline = time.monotonic() + timeout
    while not (path.is_file() and text in path.read_text()[after:]):
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
            for proc in procs:
                signal_machine(proc, signal.SIGKILL)
            tails = [stderr[-3000:] for _, _, stderr in finish(procs, 30)]
            raise AssertionError(f"{text!r} never appeared in {path}; the machines' stderr:\n" + "\n".join(tails))
        time.sleep(0.05)


def weights(out, step=STEPS):
    return load_file(str(ckpt.checkpoint_path(out, step) / "model.safetensors"))


def losses(out) -> dict:
    steps, values = ckpt.read_scalars(Path(out) / "tensorboard")["train/loss"]
    return dict(zip(steps.tolist(), values.tolist()))


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.fixture(scope="module")
def one_machine(shakespeare, tmp_path_factory):
    """The reference: the same 12 steps on 2 processes of one machine."""
    out = tmp_path_factory.mktemp("one_machine")
    proc = subprocess.run(launch_cmd("train", run_args(shakespeare, out)), env=launch_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    """2 machines x 1 process, one shared output folder and one shared data folder, empty at the start."""
    root = tmp_path_factory.mktemp("two_machines")
    out, data_dir = root / "run", root / "data"
    results = finish(start_machines([run_args(data_dir, out)] * 2))
    return out, data_dir, results


# ----------------------------------------------------------------------------------------------------------------------
# healthy runs


@pytest.mark.slow
def test_two_machines_train_exactly_like_two_processes_on_one(two_machines, one_machine):
    out, data_dir, results = two_machines
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2][-3000:]
    log = (out / "log.txt").read_text()
    # log.txt is the run's: written once, by the global main process (machine 0); machine 1 prints no log lines
    assert log.count("world_size 2 | device cpu") == 1 and log.count("step 0 | loss") == 1
    assert "world_size" not in results[1][1] and "saved" not in results[1][1]
    # each save written once, by the global main process, with every rank's RNG state inside
    assert [log.count(f"| saved {ckpt.checkpoint_path(out, step)}\n") for step in (4, 8, 12)] == [1, 1, 1]
    assert [step for step, _ in ckpt.list_checkpoints(out)] == [4, 8, 12]
    assert not list((out / "checkpoints").glob(".*"))  # no temporaries: nobody saved beside the main process
    state = ckpt.read_trainer_state(ckpt.checkpoint_path(out, STEPS))
    assert state["world_size"] == 2 and state["grad_accum_steps"] == 2
    assert sorted(p.name for p in (ckpt.checkpoint_path(out, STEPS) / "training_state").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    # one shared data folder is prepared once: by one node's first process while the other waited for its lock
    assert sum(f"wrote {data_dir} in " in stderr for _, _, stderr in results) == 1
    assert (data_dir / "manifest.json").is_file()
    assert losses(out) == losses(one_machine)
    assert_same_weights(out, one_machine)


# ----------------------------------------------------------------------------------------------------------------------
# a machine dies, a machine hangs


def survivor_line(stderr: str, rank: int) -> str:
    lines = [line for line in stderr.splitlines() if f"[rank {rank}] " in line and ("lost a peer" in line
                                                                                     or "timed out" in line)]
    assert len(lines) == 1, stderr[-4000:]
    return lines[0][lines[0].index(f"[rank {rank}] "):]


@pytest.mark.slow
def test_a_dead_machine_and_a_hung_one_end_the_run_in_bounds_and_resume_finishes_it(shakespeare, one_machine,
                                                                                   tmp_path):
    """Each machine has its own (node-local) data folder, empty at first: each node prepares its own. Then machine
    1 dies after a checkpoint, the same command is run again, machine 1 hangs, and the same command finishes."""
    out, local = tmp_path / "run", [tmp_path / "data_node0", tmp_path / "data_node1"]
    argvs = [run_args(folder, out, "--ddp_timeout", TIMEOUT, "--resume_from_checkpoint", "latest") for folder in local]

    # 1. machine 1 dies after the first checkpoint: the survivor sees the closed connection at once. (It is stopped
    # first, at once: then machine 0 cannot run on to the end however fast the steps are.)
    machines = start_machines(argvs)
    wait_for(out / "log.txt", f"saved {ckpt.checkpoint_path(out, 4)}", machines)
    signal_machine(machines[1], signal.SIGSTOP)
    signal_machine(machines[1], signal.SIGKILL)
    start = time.monotonic()
    (rc, _, stderr), (_, _, stderr_1) = finish(machines, timeout=TIMEOUT + 90)
    assert rc != 0 and time.monotonic() - start < TIMEOUT + 60
    # data preparation is per node: each node's first process prepared its own folder, and only its own
    assert f"wrote {local[0]} in " in stderr and f"wrote {local[1]} in " in stderr_1
    assert f"wrote {local[1]} in " not in stderr and f"wrote {local[0]} in " not in stderr_1
    line, newest = survivor_line(stderr, 0), ckpt.list_checkpoints(out)[-1][1]
    assert "lost a peer at step " in line and "127.0.0.1:" in line  # gloo names the peer's address
    assert f"the last finished checkpoint is {newest}; resume with the same command and " \
           "--resume_from_checkpoint latest" in line
    assert line.split("] ", 1)[1] in (out / "log.txt").read_text()  # also in the run's log
    assert "[rank0]: Traceback" not in stderr and "RuntimeError" not in stderr  # the line, not a stack

    # 2. the same command again; after its first checkpoint machine 1 hangs (SIGSTOP: a node that no longer
    # answers, no connection closed)
    logged = len((out / "log.txt").read_text())
    machines = start_machines(argvs)
    wait_for(out / "log.txt", "| saved ", machines, after=logged)
    stopped = signal_machine(machines[1], signal.SIGSTOP)
    start = time.monotonic()
    try:
        rc, _, stderr = finish(machines[:1], timeout=TIMEOUT + 120)[0]
        waited = time.monotonic() - start
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGKILL)
        finish(machines[1:], timeout=30)
    assert rc != 0 and TIMEOUT / 2 < waited < TIMEOUT + 60, waited  # bounded by --ddp_timeout, not 30 minutes
    line = survivor_line(stderr, 0)
    assert f"timed out at step " in line and f"within --ddp_timeout {TIMEOUT} s" in line
    assert f"the last finished checkpoint is {ckpt.list_checkpoints(out)[-1][1]};" in line

    # 3. a kill during a save leaves a temporary; the sweep is the run's: the main process removes it, once
    leftover = out / "checkpoints" / ".step_000012.tmp-killed"
    leftover.mkdir()
    results = finish(start_machines(argvs))
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:]
    log = (out / "log.txt").read_text()
    assert log.count(f"removed {leftover.name}") == 1 and not leftover.exists()
    assert log.count("resumed from") == 2
    assert_same_weights(out, one_machine)  # as if no machine had been lost


# ----------------------------------------------------------------------------------------------------------------------
# automatic restart


ELASTIC = ("--max_restarts", "1", "--rdzv_backend", "c10d")
# a fresh rendezvous store for every restart: the shared one keeps the dead workers' gloo addresses (README)
ELASTIC_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


@pytest.mark.slow
def test_max_restarts_restarts_the_group_after_a_killed_worker_and_the_run_finishes_exactly(shakespeare, one_machine,
                                                                                             tmp_path):
    """2 machines under torch's elastic agent (c10d rendezvous at machine 0, --max_restarts 1); rank 0, the holder of
    the run's lock, is SIGKILLed after the first checkpoint: both launchers restart their workers, which resume
    from the newest finished checkpoint, and the run ends as the uninterrupted one."""
    out = tmp_path / "run"
    argv = run_args(shakespeare, out, "--resume_from_checkpoint", "latest")
    machines = start_machines([argv, argv], extra=ELASTIC, env={**os.environ, **ELASTIC_ENV})
    wait_for(out / "log.txt", f"saved {ckpt.checkpoint_path(out, 4)}", machines)
    owner = json.loads((out / ckpt.LOCK_NAME).read_text())
    os.kill(owner["pid"], signal.SIGKILL)
    results = finish(machines, timeout=400)
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2][-3000:]
    log = (out / "log.txt").read_text()
    assert log.count("world_size 2 | device cpu") == 2  # one launch, two incarnations: the launchers restarted it
    resumed = ckpt.checkpoint_path(out, int(log.split("resumed from ")[1].split(" at step ")[1].split()[0]))
    assert log.count("resumed from") == 1 and f"resumed from {resumed} at step" in log and resumed.is_dir()
    assert json.loads((out / ckpt.LOCK_NAME).read_text())["pid"] != owner["pid"]  # the new incarnation took it
    assert_same_weights(out, one_machine)


# ----------------------------------------------------------------------------------------------------------------------
# the pieces, without processes


def test_ddp_timeout_reaches_the_process_group_also_at_600_seconds():
    """Accelerate drops InitProcessGroupKwargs values equal to its class defaults (600 s, NCCL's), and gloo's own
    default is 1800 s: a plain handler would turn --ddp_timeout 600 into 30 minutes on CPU processes."""
    for seconds in (600, 1800, 7):
        assert distributed.process_group_kwargs(seconds).to_kwargs() == {"timeout": timedelta(seconds=seconds)}


def test_ddp_timeout_must_be_positive(shakespeare, tmp_path, capsys):
    assert train_command.main(run_args(shakespeare, tmp_path / "run", "--ddp_timeout", "0")) == 2
    assert "error: --ddp_timeout 0: must be a positive number of seconds" in capsys.readouterr().err


GLOO_CLOSED = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
               "[10.0.0.2]:41677. This is typically caused by a remote worker crashing.")
GLOO_TIMEOUT = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                "10000ms for recv operation to complete")


def test_the_line_of_a_lost_peer_names_it_the_step_and_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    line = distributed.lost_peer_line(RuntimeError(GLOO_CLOSED), 3, out, 10)
    assert line == (f"lost a peer at step 3: 10.0.0.2:41677 closed the connection (another process or machine of the "
                    f"run died); no finished checkpoint in {out} yet; start again with the same command "
                    "(--resume_from_checkpoint latest starts at step 0 then)")
    for step in (2, 4):
        folder = ckpt.checkpoint_path(out, step)
        folder.mkdir(parents=True)
        ckpt.mark_complete(folder)
    ckpt.checkpoint_path(out, 6).mkdir()  # unfinished: never named
    line = distributed.lost_peer_line(RuntimeError(GLOO_TIMEOUT), 5, out, 10)
    assert line == (f"timed out at step 5: no answer from another process within --ddp_timeout 10 s (a machine hung "
                    f"or is unreachable); the last finished checkpoint is {ckpt.checkpoint_path(out, 4)}; resume "
                    "with the same command and --resume_from_checkpoint latest")
    for other in (RuntimeError("CUDA out of memory"), RuntimeError("timed out reading /data/shard_3.npy")):
        assert distributed.lost_peer_line(other, 5, out, 10) is None  # not a collective: raised as it is
    store = torch.distributed.DistNetworkError("Connection reset by peer")  # the TCP store, without gloo's prefix
    assert distributed.lost_peer_line(store, 5, out, 10).startswith("lost a peer at step 5: a connection closed")


class FakeAccelerator:
    num_processes, process_index, is_main_process = 2, 0, True


@pytest.mark.parametrize("sees, data, message", [
    (False, None, "rank 1 on node1 does not see the run.lock that rank 0 holds in"),
    (True, "other", "--data_dir holds other data for rank 1 on node1 than for rank 0"),
    (True, "error: no manifest.json in /local/data", "rank 1 on node1: no manifest.json in /local/data"),
])
def test_machines_must_agree_on_the_run_folder_and_the_data(shakespeare, tmp_path, monkeypatch, sees, data, message):
    """What rank 0 concludes from what the others report (gathered from every process in a real run)."""
    from accelerate import utils

    from minigpt_hf.data import manifest_hash

    digest = manifest_hash(shakespeare)
    with ckpt.FolderLock(tmp_path, "train"):
        monkeypatch.setattr(utils, "broadcast_object_list", lambda objects: objects)
        monkeypatch.setattr(utils, "gather_object", lambda mine: mine + [(1, "node1", sees, data or digest)])
        with pytest.raises(ValueError, match=message):
            distributed.check_machines_agree(FakeAccelerator(), str(tmp_path), shakespeare)
        monkeypatch.setattr(utils, "gather_object", lambda mine: mine + [(1, "node1", True, digest)])
        distributed.check_machines_agree(FakeAccelerator(), str(tmp_path), shakespeare)  # agreeing machines pass
