"""Shared pieces of the benchmark scripts: the models at one shape, the training step, interleaved timing,
throughput ratios, environment facts and output (markdown tables, JSON).

The scripts compare ``MiniGPTForCausalLM`` ("MiniGPT") in one process with its peers: ``transformers.GPT2LMHeadModel``
("GPT2", SDPA attention) and, in ``train_throughput.py``, a nanoGPT-style model written here (``NanoGPT``). The models
share every shape except the vocabulary: MiniGPT's and NanoGPT's are padded to 50304 rows, GPT-2's is OpenAI's 50257.
Dropout is 0 in all (GPT2Config's default is 0.1; the pre-training recipe uses 0).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.loss.loss_utils import ForCausalLMLoss

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
# Every model a benchmark can build (``build_model``); the MiniGPT-* variants are MiniGPT with one thing changed.
PEERS = {
    "MiniGPT": "MiniGPTForCausalLM",
    "MiniGPT-hfloss": "MiniGPTForCausalLM with transformers' ForCausalLMLoss (its loss before issue 20)",
    "MiniGPT-chunk": "MiniGPTForCausalLM with config.loss_chunk_size = --loss_chunk_size",
    "NanoGPT": "the nanoGPT-style model below (plain nn.Linear, F.scaled_dot_product_attention, F.cross_entropy)",
    "GPT2": "transformers.GPT2LMHeadModel, SDPA attention",
}


class NanoGPT(nn.Module):
    """A nanoGPT-style GPT-2 (karpathy/nanoGPT ``model.py``), written here as the plain-PyTorch peer: ``nn.Linear``
    layers, ``F.scaled_dot_product_attention(is_causal=True)``, the LM head tied to the token embedding, and the loss
    ``F.cross_entropy`` over all ``vocab_size`` logits (50304: the padded rows are ordinary logits here). Same init as
    MiniGPT: N(0, 0.02), residual projections N(0, 0.02/sqrt(2 n_layer)), zero biases. ``forward(idx, targets)``
    returns the mean loss (targets given) or the logits."""

    class Block(nn.Module):
        def __init__(self, n_embd: int, n_head: int):
            super().__init__()
            self.n_head = n_head
            self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
            self.c_attn, self.attn_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
            self.c_fc, self.mlp_proj = nn.Linear(n_embd, 4 * n_embd), nn.Linear(4 * n_embd, n_embd)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    def __init__(self, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int = 50304):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(self.Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


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
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="what the timings and ratios count: wall seconds, or the process's CPU seconds (user + "
                        "system, all threads), which on a shared, busy CPU leave out the time spent waiting for a "
                        "core; cpu only with --device cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, token batches and sampling")
    p.add_argument("--json", help="also write the results to this JSON file (rewritten after every row)")


def hf_causal_lm_loss(**kwargs):
    """transformers' ``ForCausalLMLoss`` under another name: set as ``model.loss_function``, MiniGPT computes its loss
    through it, as before issue 20, instead of through its own bit-identical fast path."""
    return ForCausalLMLoss(**kwargs)


def build_model(name: str, shape: str, device: torch.device, loss_chunk_size: int = 0) -> torch.nn.Module:
    """One of ``PEERS`` at a named shape, in fp32 on ``device``. MiniGPT at ``124m`` is the ``gpt2-124m`` preset."""
    s = SHAPES[shape]
    if name.startswith("MiniGPT"):
        chunk = loss_chunk_size if name == "MiniGPT-chunk" else 0
        if name == "MiniGPT-chunk" and chunk <= 0:
            raise SystemExit("the MiniGPT-chunk peer needs --loss_chunk_size > 0")
        config = (MiniGPTConfig.from_preset("gpt2-124m", loss_chunk_size=chunk) if shape == "124m"
                  else MiniGPTConfig(**s, vocab_size=50304, loss_chunk_size=chunk))
        model = MiniGPTForCausalLM(config)
        if name == "MiniGPT-hfloss":
            model.loss_function = hf_causal_lm_loss
    elif name == "NanoGPT":
        model = NanoGPT(**s)
    elif name == "GPT2":
        model = GPT2LMHeadModel(
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
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(PEERS)}")
    return model.to(device)


def build_models(shape: str, device: torch.device, loss_chunk_size: int = 0) -> dict[str, torch.nn.Module]:
    """MiniGPT (``config.loss_chunk_size`` = ``loss_chunk_size``) and GPT2LMHeadModel (SDPA, dropout 0) at one named
    shape, in fp32 on ``device``."""
    mini = build_model("MiniGPT", shape, device)
    mini.config.loss_chunk_size = loss_chunk_size
    return {"MiniGPT": mini, "GPT2": build_model("GPT2", shape, device)}


def random_tokens(batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, GPT2_VOCAB, (batch, seq_len), device=device)


def train_step(model, optimizer, batch, scaler=None, *, amp_dtype=None, grad_clip=None):
    """One optimisation step without gradient accumulation; returns the (detached) loss.

    Forward with ``labels=batch`` (the model shifts, as HF models do) under autocast when ``amp_dtype`` is set, then
    ``backward_and_step``. Without an optimizer it is forward + backward only.
    """
    with torch.autocast(batch.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = model(input_ids=batch, labels=batch).loss
    backward_and_step(model, optimizer, loss, scaler, grad_clip)
    return loss.detach()


def backward_and_step(model, optimizer, loss, scaler=None, grad_clip=None):
    """Backward (through ``scaler`` when given: fp16), then, with an ``optimizer``: unscale, clip the global gradient
    norm to ``grad_clip`` (when set), step, and drop the gradients; without one, just drop them. Returns the
    gradient norm before clipping (None without clipping)."""
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if optimizer is None:
        model.zero_grad(set_to_none=True)
        return None
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip else None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall seconds and process CPU seconds of one call, with the device synchronised before and after."""
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, *, warmup: int, rounds: int, iters: int,
    clock: str = "wall",
) -> dict[str, dict[str, list]]:
    """Time several callables against the same machine noise: ``warmup`` untimed calls each, then ``rounds`` rounds
    of A×iters, B×iters, … (every other round in reverse order, so that no callable always follows the same one).
    Returns, per name, the warm-up wall times (the first one includes any compilation) and the timed seconds per
    round: ``rounds_s`` on ``clock`` ("wall", or "cpu": the process's CPU time, user + system), and both clocks as
    ``rounds_wall_s`` and ``rounds_cpu_s``."""
    out = {name: {"warmup_s": [timed(fn, device)[0] for _ in range(warmup)], "rounds_wall_s": [], "rounds_cpu_s": []}
           for name, fn in fns.items()}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            wall, cpu = zip(*(timed(fns[name], device) for _ in range(iters)))
            out[name]["rounds_wall_s"].append(list(wall))
            out[name]["rounds_cpu_s"].append(list(cpu))
    for t in out.values():
        t["rounds_s"] = t[f"rounds_{clock}_s"]
    return out


def on_clock(times: dict[str, dict[str, list]], clock: str) -> dict[str, dict[str, list]]:
    """``interleaved``'s timings with ``rounds_s`` taken from the other clock ("wall" or "cpu")."""
    return {name: {**t, "rounds_s": t[f"rounds_{clock}_s"]} for name, t in times.items()}


def compare(times: dict[str, dict[str, list]], work: float, reference: str = "MiniGPT") -> dict:
    """Throughputs (``work`` units per second, at the median over all timed calls) of every model, and the speed
    ratio ``reference`` / each other model (higher is better): the median of the per-round ratios, with their min and
    max, under ``result["vs"][name]``. ``result["ratio"]`` (and ``_min``, ``_max``, ``_per_round``) repeat the ratio
    over GPT2 when it is there."""
    result = {"vs": {}}
    for name, t in times.items():
        median_s = statistics.median(s for round_s in t["rounds_s"] for s in round_s)
        result[name] = {"median_s": median_s, "per_s": work / median_s, "first_call_s": t["warmup_s"][0]}
        if name == reference:
            continue
        per_round = [
            statistics.median(other) / statistics.median(ref)
            for ref, other in zip(times[reference]["rounds_s"], t["rounds_s"], strict=True)
        ]
        result["vs"][name] = {"ratio": statistics.median(per_round), "ratio_min": min(per_round),
                              "ratio_max": max(per_round), "ratio_per_round": per_round}
    if "GPT2" in result["vs"]:
        result.update(result["vs"]["GPT2"])
    return result


def ratio_cell(result: dict) -> str:
    return f"{result['ratio']:.3f}"


def spread_cell(result: dict) -> str:
    return f"{result['ratio_min']:.3f}–{result['ratio_max']:.3f}"


def load_average() -> str:
    """The machine's 1/5/15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


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
        "load_average": load_average(),
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
