"""Shared pieces of the benchmark scripts: the two models at one shape, the training step, interleaved timing,
throughput ratios, environment facts and output (markdown tables, JSON).

Both scripts compare ``MiniGPTForCausalLM`` ("MiniGPT") with ``transformers.GPT2LMHeadModel`` ("GPT2", SDPA
attention) in one process. The models share every shape except the vocabulary: MiniGPT's is padded to 50304 rows,
GPT-2's is OpenAI's 50257. Dropout is 0 in both (GPT2Config's default is 0.1; the pre-training recipe uses 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`
from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM  # noqa: E402

# Named shapes: "124m" is GPT-2 small; "small" is sized for a 2-core CPU; "tiny" only checks that a script runs.
SHAPES: dict[str, dict] = {
    "124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    "small": dict(n_layer=4, n_head=4, n_embd=256, block_size=256),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GPT2_VOCAB = 50257  # also the id range of the random token batches, so both models see the same ids
EOT_ID = 50256
MODELS = ("MiniGPT", "GPT2")


def setup(device: str, seed: int, threads: int | None = None) -> torch.device:
    """Validate the device, seed every generator, set the CPU thread count (``threads``; torch's default when None),
    allow TF32 matmuls on CUDA (as the training recipe does)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to this torch build; use --device cpu")
    if threads:
        torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()  # keep one-time notices out of the printed tables
    torch.manual_seed(seed)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    return torch.device(device)


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the docstring's layout and shows the defaults that are not None (those are given in words)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_common_args(p) -> None:
    """Options both scripts share."""
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where both models run")
    p.add_argument("--shape", choices=list(SHAPES), help="default: 124m on cuda, small on cpu")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice). On a shared, "
                                               "busy machine 1 thread gives far steadier timings than 2")
    p.add_argument("--rounds", type=positive_int, help="interleaved rounds")
    p.add_argument("--warmup", type=positive_int, help="untimed calls per model before the rounds")
    p.add_argument("--loss_chunk_size", type=int, default=0,
                   help="MiniGPT's config.loss_chunk_size: the chunked loss that never holds the (B, T, V) logits "
                        "(0 = off, the model's default; GPT2 has no such option)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, token batches and sampling")
    p.add_argument("--json", help="also write the results to this JSON file (rewritten after every row)")


def build_models(shape: str, device: torch.device, loss_chunk_size: int = 0) -> dict[str, torch.nn.Module]:
    """MiniGPT and GPT2LMHeadModel (SDPA, dropout 0) at one named shape, in fp32 on ``device``."""
    s = SHAPES[shape]
    mini = MiniGPTForCausalLM(MiniGPTConfig(**s, vocab_size=50304, loss_chunk_size=loss_chunk_size))
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            n_layer=s["n_layer"],
            n_head=s["n_head"],
            n_embd=s["n_embd"],
            n_positions=s["block_size"],
            vocab_size=GPT2_VOCAB,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            attn_implementation="sdpa",
        )
    )
    return {"MiniGPT": mini.to(device), "GPT2": gpt2.to(device)}


def random_tokens(batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, GPT2_VOCAB, (batch, seq_len), device=device)


def train_step(model, optimizer, batch, scaler=None, *, amp_dtype=None, grad_clip=None):
    """One optimisation step without gradient accumulation; returns the (detached) loss.

    Forward with ``labels=batch`` (the model shifts, as HF models do) under autocast when ``amp_dtype`` is set,
    backward (through ``scaler`` when given: fp16), then, with an ``optimizer``: unscale, clip the global gradient
    norm to ``grad_clip`` (when set), step, and drop the gradients. Without an optimizer it is forward + backward only.
    """
    with torch.autocast(batch.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = model(input_ids=batch, labels=batch).loss
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if optimizer is None:
        model.zero_grad(set_to_none=True)
        return loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call, with the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, *, warmup: int, rounds: int, iters: int
) -> dict[str, dict[str, list]]:
    """Time several callables against the same machine noise: ``warmup`` untimed calls each, then ``rounds`` rounds
    of A×iters, B×iters, … Returns, per name, the warm-up times (the first one includes any compilation) and the
    timed seconds per round."""
    out = {name: {"warmup_s": [timed(fn, device) for _ in range(warmup)], "rounds_s": []} for name, fn in fns.items()}
    for _ in range(rounds):
        for name, fn in fns.items():
            out[name]["rounds_s"].append([timed(fn, device) for _ in range(iters)])
    return out


def compare(times: dict[str, dict[str, list]], work: float) -> dict:
    """Throughputs (``work`` units per second, at the median over all timed calls) of MiniGPT and GPT2, and the
    ratio MiniGPT / GPT2 (higher is better): the median of the per-round ratios, with their min and max."""
    per_round = [
        statistics.median(gpt2) / statistics.median(mini)
        for mini, gpt2 in zip(times["MiniGPT"]["rounds_s"], times["GPT2"]["rounds_s"], strict=True)
    ]
    result = {}
    for name in MODELS:
        median_s = statistics.median(t for round_s in times[name]["rounds_s"] for t in round_s)
        result[name] = {"median_s": median_s, "per_s": work / median_s, "first_call_s": times[name]["warmup_s"][0]}
    result["ratio"] = statistics.median(per_round)
    result["ratio_min"], result["ratio_max"] = min(per_round), max(per_round)
    result["ratio_per_round"] = per_round
    return result


def ratio_cell(result: dict) -> str:
    return f"{result['ratio']:.3f}"


def spread_cell(result: dict) -> str:
    return f"{result['ratio_min']:.3f}–{result['ratio_max']:.3f}"


def environment(device: torch.device) -> dict:
    """Device and versions, for the results file."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        model = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")),
            platform.processor() or "unknown CPU",
        )
        threads = torch.get_num_threads()
        name = f"{model}, {threads} thread{'s' if threads > 1 else ''} ({os.cpu_count()} CPUs visible)"
    return {
        "device": name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }


class Report:
    """Markdown printed as results arrive, and the same results rewritten to a JSON file after every row, so a run
    cut short (a timeout) keeps what it measured."""

    def __init__(self, json_path: str | None, header: dict):
        self.json_path = Path(json_path) if json_path else None
        self.data = {**header, "results": []}
        self._write()

    def table(self, title: str, columns: list[str]) -> None:
        print(f"\n### {title}\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns), flush=True)

    def row(self, cells: list, record: dict) -> None:
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
        self.data["results"].append(record)
        self._write()

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self._write()

    def note(self, text: str) -> None:
        print(f"\n{text}", flush=True)

    def _write(self) -> None:
        if self.json_path:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_path.write_text(json.dumps(self.data, indent=2) + "\n")
