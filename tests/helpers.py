"""What several test files need: the repository root, loading a script as a module, and a 2-process launch."""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """``scripts/{name}.py`` as a module, so its ``main(argv)`` runs in-process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two(script: str, argv, env=None, timeout: int = 400) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``scripts/{script}.py`` on 2 CPU processes (design.md, 'Distributed on CPU')."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(ROOT / "scripts" / f"{script}.py"), *map(str, argv)]
    env = {**(os.environ if env is None else env), "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
