"""What several test files need: the repository root, free ports and a 2-process ``accelerate launch``."""

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
    """``accelerate launch -m minigpt_hf COMMAND`` on 2 CPU processes, waited for."""
    return subprocess.run(launch_cmd(command, argv), env=launch_env(env), capture_output=True, text=True,
                          timeout=timeout)
