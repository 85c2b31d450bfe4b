"""Data preparation throughput: ``minigpt prepare-data`` against build-nanogpt's ``fineweb.py`` method.

    python benchmarks/bench_data.py --tokens 20000000 --num_proc 2 --rounds 3

1. Builds a hub-style parquet dataset folder (``DIR/corpus/data/train-NNNNN-of-NNNNN.parquet``, a ``text`` column,
   row groups of 1,000 rows as datatrove writes FineWeb) of at least ``--tokens`` GPT-2 tokens from the embedded
   plays: each play is cut into documents of 20-180 lines (about 800 tokens, FineWeb-Edu's order of size), and
   the documents are shuffled (seed 0) and repeated until the size is reached.
2. Runs, as separate processes and interleaved round by round (reference, ours, reference, ours, ...):
   - the **reference**: build-nanogpt's algorithm written out below (``load_dataset(FOLDER, streaming=True)``,
     ``mp.Pool(num_proc).imap(tokenize, dataset, chunksize=16)``, one document per task, ``[eot] +
     encode_ordinary`` to uint16, shards written with ``np.save``; streaming spares it the Arrow cache copy that
     its non-streaming ``load_dataset`` would make, which only favours it);
   - **ours**: ``python -m minigpt_hf prepare-data --dataset FOLDER --num_proc N`` into a fresh folder.
3. Checks that both wrote the same token stream, then reports for each whole-process wall time (start-up
   included), Mtok/s, CPU seconds, and the ratio ours / reference (median of the rounds, with the range); also
   the time after start-up as each side reports it; and the hours 10B tokens (FineWeb-Edu ``sample-10BT``)
   would take at 16 and 64 processes, assuming tokens/s grows linearly with processes (one core each, the
   per-process rate measured here at ``--num_proc``).

Needs pyarrow, datasets (the reference reads through it), tiktoken; the corpus is made once per ``--workdir``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def _tokenization():
    """minigpt_hf/tokenization.py alone (the GPT-2 encoding from the bundled files, identical to tiktoken's
    "gpt2"), without the package's __init__, so that the reference pays no start-up of ours."""
    spec = importlib.util.spec_from_file_location("_gpt2_tokenization", ROOT / "minigpt_hf" / "tokenization.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------------------
# the corpus


def _plays() -> list[str]:
    import gzip

    with gzip.open(ROOT / "minigpt_hf" / "assets" / "corpus" / "shakespeare.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def build_corpus(folder: Path, tokens: int, seed: int = 0, rows_per_file: int = 50_000) -> dict:
    """A parquet dataset folder of at least `tokens` GPT-2 tokens (EOT per document included); its facts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    info_path = folder / "corpus.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info["requested_tokens"] == tokens and info["seed"] == seed:
            return info
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(seed)
    encoding = _tokenization().get_encoding()
    pieces = []
    for play in _plays():
        lines, i = play.split("\n"), 0
        while i < len(lines):
            n = rng.randint(20, 180)
            piece = "\n".join(lines[i : i + n])
            if piece.strip():
                pieces.append((piece, 1 + len(encoding.encode_ordinary(piece))))
            i += n
    docs, total = [], 0
    while total < tokens:
        rng.shuffle(pieces)
        for piece, n in pieces:
            docs.append(piece)
            total += n
            if total >= tokens:
                break
    (folder / "data").mkdir(parents=True)
    files = (len(docs) + rows_per_file - 1) // rows_per_file
    for k in range(files):
        part = docs[k * rows_per_file : (k + 1) * rows_per_file]
        pq.write_table(pa.table({"text": part}), folder / "data" / f"train-{k:05d}-of-{files:05d}.parquet",
                       row_group_size=1000)
    info = {"requested_tokens": tokens, "seed": seed, "tokens": total, "documents": len(docs),
            "unique_documents": len(pieces), "bytes": sum(len(d.encode()) for d in docs), "files": files}
    info_path.write_text(json.dumps(info, indent=2))
    return info


# ----------------------------------------------------------------------------------------------------------------------
# the reference: build-nanogpt's fineweb.py loop, with its sizes as parameters

_enc = None


def _reference_tokenize(doc):
    """fineweb.py's tokenize: [eot] + encode_ordinary(text), checked, as uint16."""
    import numpy as np

    global _enc
    if _enc is None:
        _enc = _tokenization().get_encoding()
    tokens = [_enc._special_tokens["<|endoftext|>"]]
    tokens.extend(_enc.encode_ordinary(doc["text"]))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large for uint16"
    return tokens_np.astype(np.uint16)


def reference(dataset: str, out_dir: str, num_proc: int, shard_size: int) -> None:
    """fineweb.py: a Pool of tokenisers over the dataset's documents, imap(chunksize=16), shards of shard_size
    tokens written with np.save (the first is the val shard)."""
    import multiprocessing as mp

    import numpy as np
    from datasets import load_dataset

    os.makedirs(out_dir, exist_ok=True)
    fw = load_dataset(dataset, split="train", streaming=True)
    _reference_tokenize({"text": ""})  # build the encoder before the fork, as fineweb.py's module-level enc
    start = time.time()  # "after start-up": from here (ours counts from its argument parsing, datasets' import on)
    with mp.Pool(num_proc) as pool:
        shard_index, token_count = 0, 0
        all_tokens_np = np.empty((shard_size,), dtype=np.uint16)
        for tokens in pool.imap(_reference_tokenize, fw, chunksize=16):
            if token_count + len(tokens) < shard_size:
                all_tokens_np[token_count : token_count + len(tokens)] = tokens
                token_count += len(tokens)
            else:
                split = "val" if shard_index == 0 else "train"
                remainder = shard_size - token_count
                all_tokens_np[token_count : token_count + remainder] = tokens[:remainder]
                np.save(os.path.join(out_dir, f"ref_{split}_{shard_index:06d}"), all_tokens_np)
                shard_index += 1
                all_tokens_np[0 : len(tokens) - remainder] = tokens[remainder:]
                token_count = len(tokens) - remainder
        if token_count != 0:
            split = "val" if shard_index == 0 else "train"
            np.save(os.path.join(out_dir, f"ref_{split}_{shard_index:06d}"), all_tokens_np[:token_count])
    print(f"reference: tokenised in {time.time() - start:.2f} s", flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# running both


def _run(argv: list[str]) -> dict:
    """Run a process; its wall time, its children's CPU time, its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "out": result.stdout + result.stderr}


def run_reference(corpus: Path, out: Path, num_proc: int, shard_size: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    r = _run([sys.executable, __file__, "--reference", str(corpus), str(out), str(num_proc), str(shard_size)])
    r["inner"] = float(re.search(r"tokenised in ([\d.]+) s", r["out"]).group(1))
    return r


def run_ours(corpus: Path, out: Path, num_proc: int, shard_size: int, val_tokens: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    r = _run([sys.executable, "-m", "minigpt_hf", "prepare-data", "--out_dir", str(out), "--dataset", str(corpus),
              "--num_proc", str(num_proc), "--shard_size", str(shard_size), "--val_tokens", str(val_tokens)])
    r["inner"] = float(re.search(r"wrote .* in ([\d.]+) s", r["out"]).group(1))
    return r


def same_tokens(ref_dir: Path, our_dir: Path) -> bool:
    """Whether both folders hold the same token stream (shards in order)."""
    import numpy as np

    ref = sorted(ref_dir.glob("ref_*.npy"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    manifest = json.loads((our_dir / "manifest.json").read_text())
    ours = [our_dir / s["file"] for s in manifest["shards"]]
    a = np.concatenate([np.load(p) for p in ref])
    b = np.concatenate([np.load(p) for p in ours])
    return len(a) == len(b) and bool((a == b).all())


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=20_000_000, help="corpus size in tokens (default 20M)")
    parser.add_argument("--num_proc", type=int, default=2, help="tokenising processes, both sides (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--shard_size", type=int, default=10_000_000, help="tokens per shard (default 10M)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/minigpt_bench_data"))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--reference", nargs=4, metavar=("DATASET", "OUT", "NUM_PROC", "SHARD_SIZE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference:
        dataset, out, num_proc, shard_size = args.reference
        reference(dataset, out, int(num_proc), int(shard_size))
        return {}
    corpus = args.workdir / f"corpus-{args.tokens}"
    facts = build_corpus(corpus, args.tokens)
    print(f"corpus: {corpus} ({facts['tokens']:,} tokens, {facts['documents']:,} documents, {facts['files']} files)")
    rows = {"reference": [], "ours": []}
    for k in range(args.rounds):
        ref = run_reference(corpus, args.workdir / "out-reference", args.num_proc, args.shard_size)
        ours = run_ours(corpus, args.workdir / "out-ours", args.num_proc, args.shard_size,
                        min(args.shard_size, facts["tokens"] // 10))
        if k == 0 and not same_tokens(args.workdir / "out-reference", args.workdir / "out-ours"):
            raise SystemExit("the two wrote different tokens")
        for name, r in (("reference", ref), ("ours", ours)):
            rows[name].append(r)
            print(f"round {k + 1} {name:9s}: {r['wall']:6.2f} s wall ({r['inner']:6.2f} s after start-up), "
                  f"{r['cpu']:6.2f} CPU s, {facts['tokens'] / r['wall'] / 1e6:5.2f} Mtok/s", flush=True)
    ratios = [a["wall"] / b["wall"] for a, b in zip(rows["reference"], rows["ours"], strict=True)]
    inner = [a["inner"] / b["inner"] for a, b in zip(rows["reference"], rows["ours"], strict=True)]
    med = {name: statistics.median(r["wall"] for r in rs) for name, rs in rows.items()}
    mtok = {name: facts["tokens"] / med[name] / 1e6 for name in rows}
    hours = {name: {p: 10e9 / (mtok[name] * 1e6 / args.num_proc * p) / 3600 for p in (16, 64)} for name in rows}
    result = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]), "corpus": facts,
              "num_proc": args.num_proc, "rounds": args.rounds, "median_wall_s": med, "mtok_per_s": mtok,
              "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
              "ratio_after_startup_median": statistics.median(inner), "hours_10B": hours,
              "cpu_s_median": {n: statistics.median(r["cpu"] for r in rs) for n, rs in rows.items()}}
    print(f"\n| | reference (build-nanogpt) | ours (minigpt prepare-data) |\n|---|---|---|\n"
          f"| whole process, median | {med['reference']:.2f} s, {mtok['reference']:.2f} Mtok/s | "
          f"{med['ours']:.2f} s, {mtok['ours']:.2f} Mtok/s |\n"
          f"| CPU seconds, median | {result['cpu_s_median']['reference']:.1f} | {result['cpu_s_median']['ours']:.1f} |\n"
          f"| 10B tokens at 16 / 64 processes | {hours['reference'][16]:.1f} h / {hours['reference'][64]:.1f} h | "
          f"{hours['ours'][16]:.1f} h / {hours['ours'][64]:.1f} h |\n\n"
          f"ratio ours/reference (whole process): {result['ratio_median']:.2f}x median, range "
          f"{min(ratios):.2f}-{max(ratios):.2f}; after start-up: {result['ratio_after_startup_median']:.2f}x; "
          f"machine: {result['machine']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
