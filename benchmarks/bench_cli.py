"""Start-up time of the command line: ``minigpt --help`` and ``minigpt generate --help`` against ``python -c pass``.

Each command runs as a fresh process (wall time from spawn to exit), the commands interleaved round by round so that
machine noise hits all of them alike; reported per command: the median time and its ratio to ``python -c pass``
measured in the same rounds (median of the per-round ratios, with their range). ``import torch`` is there for scale:
it is what every command paid before the CLI stopped importing it.

    python benchmarks/bench_cli.py                    # 15 rounds
    python benchmarks/bench_cli.py --rounds 30 --json out/cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "minigpt --help": [sys.executable, "-m", "minigpt_hf", "--help"],
    "minigpt generate --help": [sys.executable, "-m", "minigpt_hf", "generate", "--help"],
    "minigpt train --help": [sys.executable, "-m", "minigpt_hf", "train", "--help"],
    "minigpt train --max_stesp 1": [sys.executable, "-m", "minigpt_hf", "train", "--max_stesp", "1"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def wall_time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    console = shutil.which("minigpt")
    if console:  # the installed entry point as users type it
        COMMANDS["minigpt --help (console script)"] = [console, "--help"]
    for cmd in COMMANDS.values():  # warm the file cache and the .pyc files
        wall_time(cmd)
    times = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            times[name].append(wall_time(cmd))
    base = times["python -c pass"]
    rows = {}
    print(f"{'command':<34} {'median':>9} {'x python -c pass':>17} {'range':>15}")
    for name, values in times.items():
        ratios = [t / b for t, b in zip(values, base)]
        rows[name] = {"median_s": statistics.median(values), "ratio": statistics.median(ratios),
                      "ratio_min": min(ratios), "ratio_max": max(ratios)}
        print(f"{name:<34} {statistics.median(values) * 1000:>7.0f}ms {statistics.median(ratios):>16.1f}x "
              f"{min(ratios):>7.1f}-{max(ratios):.1f}x")
    result = {"rounds": args.rounds, "python": sys.version.split()[0], "cpu": platform.processor() or platform.machine(),
              "load": os.getloadavg(), "commands": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
