"""What the checksums of issue 18 cost: sha256 while writing a checkpoint's big files, and reading them to verify.

    python benchmarks/bench_checksums.py --dir /tmp --mb 500 --rounds 3

Each pair is measured interleaved (A, B, A, B ... over ``--rounds``) in one process, so that the machine's noise hits
both; the ratio is B / A (the median of the per-round ratios, with their range). Writes go to the page cache (no
fsync, the same in both), which makes the hashing's share the largest it can be. Pairs:

- ``model``: a state dict of ``--mb`` MB of fp32 tensors written as model.safetensors by ``safetensors.torch.save_file``
  (A) and through :func:`minigpt_hf.integrity.recording` as ``save_pretrained`` does there (B: the bytes of
  ``safetensors.torch.save``, hashed while written);
- ``optimizer``: an AdamW-like state of twice that size by ``torch.save(state, path)`` (A) and ``torch.save`` into a
  hashing writer (B);
- ``verify``: reading the ``--mb`` MB weight file (A) and reading it with its sha256 (B, what verification does);
- ``sha256``: hashing ``--mb`` MB in memory (the figure the README quotes), next to a plain copy of the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`
from minigpt_hf import integrity  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(integrity.CHUNK):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the files are written")
    parser.add_argument("--mb", type=int, default=500, help="size of the weights in MB (124M fp32 params: 500)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from safetensors.torch import save_file

    import transformers.modeling_utils as modeling_utils

    n = args.mb * 2**20 // 4
    weights = {f"w{i}": torch.randn(n // 8) for i in range(8)}
    optimizer = {"state": {i: {"exp_avg": torch.randn(n // 8), "exp_avg_sq": torch.rand(n // 8)} for i in range(8)}}
    blob = bytes(torch.randint(0, 255, (args.mb * 2**20,), dtype=torch.uint8).numpy())
    folder = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench-checksums-"))

    def model_hashed():
        with integrity.recording(folder) as rec:
            modeling_utils.safe_save_file(weights, str(folder / "b.safetensors"), metadata={"format": "pt"})
        assert "b.safetensors" in rec.files

    def optimizer_hashed():
        with integrity.recording(folder) as rec:
            torch.save(optimizer, folder / "b.bin")
        assert "b.bin" in rec.files

    pairs = {
        "model": (lambda: save_file(weights, str(folder / "a.safetensors"), metadata={"format": "pt"}), model_hashed),
        "optimizer": (lambda: torch.save(optimizer, folder / "a.bin"), optimizer_hashed),
        "verify": (lambda: read(folder / "a.safetensors"), lambda: integrity.sha256_file(folder / "a.safetensors")),
        "sha256": (lambda: bytearray(blob), lambda: hashlib.sha256(blob).hexdigest()),
    }
    print(f"| pair ({args.mb} MB weights) | A s (median) | B s (median) | B / A (range) |\n|---|---|---|---|")
    try:
        for name, (a, b) in pairs.items():
            a(), b()  # warm-up: page cache, allocations
            times = [(timed(a), timed(b)) for _ in range(args.rounds)]
            ratios = [tb / ta for ta, tb in times]
            print(f"| {name} | {statistics.median(t for t, _ in times):.2f} | {statistics.median(t for _, t in times):.2f}"
                  f" | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
