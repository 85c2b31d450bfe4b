"""What several test files need: the repository root, free ports and a 2-process ``accelerate launch``."""

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_cmd(command: str, argv, num_processes: int = 2, extra=(), num_machines: int = 1, machine_rank: int = 0,
               port: int | None = None) -> list[str]:
    """``accelerate launch -m minigpt_hf COMMAND ARGV`` on CPU processes (design.md, 'Distributed on CPU'). With
    ``num_machines`` > 1, the launcher of machine ``machine_rank`` (``num_processes`` counts all machines' processes),
    meeting the others at 127.0.0.1:``port``, which every machine's command must share."""
    machines = ["--num_machines", str(num_machines)]
    if num_machines > 1:
        machines += ["--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            *machines, "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port or free_port()), *extra, "-m", "minigpt_hf", command, *map(str, argv)]


def launch_env(env=None) -> dict:
    return {**(os.environ if env is None else env), "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def launch_two(command: str, argv, env=None, timeout: int = 400) -> subprocess.CompletedProcess:
    """``accelerate launch -m minigpt_hf COMMAND`` on 2 CPU processes, waited for. Past `timeout` the whole launch
    (the launcher and its workers) is killed and the failure shows the tail of what it printed; killing only the
    launcher would leave its workers running on as orphans (one was found hung an hour later)."""
    import psutil

    cmd = launch_cmd(command, argv)
    proc = subprocess.Popen(cmd, env=launch_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # (torch's launcher starts each worker in a session of its own: a process group kill misses them)
        for process in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"the launch ran past {timeout} s and was killed; stdout ends:\n{stdout[-2000:]}\n"
                             f"stderr ends:\n{stderr[-4000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
