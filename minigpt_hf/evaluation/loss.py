"""Mean next-token loss, perplexity and bits per byte of a causal LM over uint16 token shards.

The tokens are cut into non-overlapping windows of ``T + 1`` tokens with stride ``T`` (nanoGPT's ``x = buf[:-1]``,
``y = buf[1:]``), so every token after the first is predicted exactly once with up to ``T`` tokens of context.

**Bits per byte** (``bpb``) is the loss normalised by the text it covers, so that models with different tokenizers
compare: the nats summed over the evaluated targets ``y`` divided by ``ln 2`` times the UTF-8 bytes those targets
decode to. A token's bytes are its own bytes in the GPT-2 vocabulary, so the bytes of a stretch of targets are exactly
``len(decoded text .encode("utf-8"))``, also where a character is split over several tokens. ``<|endoftext|>`` (a
document boundary, not text) has 0 bytes and its loss is left out of the numerator too. This is nanochat's
``evaluate_bpb`` (special tokens masked out of both sums), except that nanochat counts each token by decoding it
alone, which turns a partial UTF-8 character into U+FFFD (3 bytes); here such a token counts the bytes it holds.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm


def load_tokens(path, split: str = "val", max_tokens: int | None = None) -> np.ndarray:
    """Tokens of one ``.npy`` shard, or of a data folder's ``split`` shards in the order its manifest lists them,
    stopping after ``max_tokens``. A single shard stays memory-mapped.

    For a data folder the manifest is not taken on trust: the split's total must equal its shards' counts, and
    every shard read must have the token count and (when recorded) the sha256 the manifest gives it -- a one-line
    error naming the shard otherwise. Val shards are small (1M tokens, 2 MB, by default): hashing costs ~ms."""
    from ..data import check_shard, load_shard, split_entries

    path = Path(path)
    if path.is_dir():
        shards = [lambda entry=entry: check_shard(path, entry) for entry in split_entries(path, split)]
    elif path.is_file():
        shards = [lambda: load_shard(path)]
    else:
        raise FileNotFoundError(f"{path}: no such token shard or data folder")
    parts, total = [], 0
    for shard in shards:
        tokens = shard()
        if max_tokens is not None:
            tokens = tokens[: max_tokens - total]
        parts.append(tokens)
        total += len(tokens)
        if max_tokens is not None and total >= max_tokens:
            break
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def context_length(model, seq_len: int | None = None) -> int:
    """``T`` = the smaller of ``seq_len`` and the model's ``max_position_embeddings`` (whichever is known)."""
    limits = [n for n in (seq_len, getattr(model.config, "max_position_embeddings", None)) if n]
    if not limits:
        raise ValueError("the model config has no max_position_embeddings; pass seq_len")
    return min(limits)


def make_windows(tokens: np.ndarray, seq_len: int, indices) -> torch.Tensor:
    """Windows ``tokens[i*T : i*T + T + 1]`` for ``i`` in ``indices`` as a ``(len(indices), T + 1)`` long tensor."""
    rows = [tokens[i * seq_len : i * seq_len + seq_len + 1] for i in indices]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Float32 ``-log softmax(logits)[target]`` with the shape of ``targets``, for ``logits`` of shape (*targets, V).

    Computed on the (N, V) layout from max-shifted logits. At GPT-2's logit scale (around -100) CPU
    ``F.cross_entropy`` is off by ~1e-4 per token over ``logits.transpose(1, 2)``, and still by a few 1e-6 of one sign
    over (N, V) (its softmax sum accumulates sequentially); shifted ``logsumexp - gather`` is off by float32 rounding.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    flat = flat - flat.amax(dim=-1, keepdim=True)  # near the max (the terms that matter) this is exact
    picked = flat.gather(1, targets.reshape(-1, 1).to(flat.device)).squeeze(1)
    return (torch.logsumexp(flat, dim=-1) - picked).view(targets.shape)


@functools.lru_cache(maxsize=None)
def token_byte_lengths() -> np.ndarray:
    """UTF-8 bytes of every uint16 token id as GPT-2 decodes it (int64, 65,536 entries): 0 for ``<|endoftext|>``
    and for ids past GPT-2's vocabulary (padding ids, never text)."""
    from ..tokenization import mergeable_ranks

    lengths = np.zeros(2**16, dtype=np.int64)
    for token, index in mergeable_ranks().items():  # every GPT-2 token but <|endoftext|>, as its bytes
        lengths[index] = len(token)
    return lengths


@functools.lru_cache(maxsize=8)
def _byte_table(device: str) -> torch.Tensor:
    return torch.from_numpy(token_byte_lengths()).to(device)


def nats_and_bytes(logits: torch.Tensor, targets: torch.Tensor, rows: int = 8):
    """Per-row sums for the loss and bits per byte of ``logits`` (B, T, V) predicting ``targets`` (B, T):
    ``(nats, nats of the targets that have bytes, bytes)``, three (B,) tensors on the logits' device (float64, or
    float32 where the device has no float64; bytes int64). Rows go ``rows`` at a time, so no extra (B, T, V) float32
    copy is made. No host sync."""
    targets = targets.to(logits.device)
    table = _byte_table(str(logits.device))
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    nats, counted, n_bytes = [], [], []
    for start in range(0, len(targets), rows):
        nll = token_nll(logits[start : start + rows], targets[start : start + rows]).to(dtype)
        lengths = table[targets[start : start + rows].long()]
        nats.append(nll.sum(dim=1))
        counted.append((nll * (lengths > 0)).sum(dim=1))
        n_bytes.append(lengths.sum(dim=1))
    return torch.cat(nats), torch.cat(counted), torch.cat(n_bytes)


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """``nats / (ln 2 * bytes)``: the nats of the targets that have bytes over the bytes they decode to."""
    return nats / (math.log(2) * n_bytes) if n_bytes else float("nan")


def token_losses(model, windows: torch.Tensor) -> torch.Tensor:
    """Per-token float32 cross-entropy ``(B, T)`` of predicting ``windows[:, 1:]`` from ``windows[:, :-1]``."""
    windows = windows.to(next(model.parameters()).device)
    return token_nll(model(input_ids=windows[:, :-1]).logits, windows[:, 1:])


@torch.no_grad()
def evaluate_loss(model, tokens: np.ndarray, seq_len=None, batch_size: int = 8, accelerator=None, progress=True):
    """Token-weighted mean loss, perplexity and bits per byte of ``model`` over ``tokens`` (GPT-2 ids).

    With an ``accelerate.Accelerator`` each process takes windows ``rank::world``; the per-window sums are gathered
    and added with ``math.fsum`` (exact, order-free), so every process returns what one process would. Returns
    ``{"loss", "perplexity", "bpb", "n_tokens", "n_bytes", "n_windows", "seq_len"}``; ``bpb`` and ``n_bytes`` as the
    module docstring defines them, over the same targets as the loss.
    """
    seq_len = context_length(model, seq_len)
    n_windows = (len(tokens) - 1) // seq_len
    if n_windows < 1:
        raise ValueError(f"need at least {seq_len + 1} tokens for one window of {seq_len}, got {len(tokens)}")
    vocab_size = getattr(model.config, "vocab_size", None)
    if vocab_size and int(tokens[: n_windows * seq_len + 1].max()) >= vocab_size:
        raise ValueError(f"the tokens contain ids >= the model's vocab_size {vocab_size}")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    if accelerator is not None:
        model = accelerator.unwrap_model(model)  # a DDP wrapper would sync on forward; ranks run unequal counts
    was_training = model.training
    model.eval()
    mine = range(rank, n_windows, world)
    sums = []  # per window: (nats, nats of targets with bytes, bytes)
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(mine), batch_size), desc="eval loss", disable=not progress or rank != 0):
        windows = make_windows(tokens, seq_len, mine[start : start + batch_size]).to(device)
        per_row = nats_and_bytes(model(input_ids=windows[:, :-1]).logits, windows[:, 1:])
        sums += zip(*(t.tolist() for t in per_row))
    model.train(was_training)
    if accelerator is not None:
        from accelerate.utils import gather_object

        sums = gather_object(sums)
    nats, counted, n_bytes = (list(column) for column in zip(*sums))
    loss = math.fsum(nats) / (n_windows * seq_len)
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bpb": bits_per_byte(math.fsum(counted), sum(n_bytes)),
        "n_tokens": n_windows * seq_len,
        "n_bytes": sum(n_bytes),
        "n_windows": n_windows,
        "seq_len": seq_len,
    }
