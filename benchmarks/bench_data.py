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


# `prepare-data` without the package's __init__ (which imports transformers and torch to register the Auto classes;
# issue 19 makes it lazy): what the command itself costs.
BARE = ("import sys, types; package = types.ModuleType('minigpt_hf'); package.__path__ = [sys.argv.pop(1)]; "
        "sys.modules['minigpt_hf'] = package; from minigpt_hf.commands.prepare_data import main; sys.exit(main())")


def run_ours(corpus: Path, out: Path, num_proc: int, shard_size: int, val_tokens: int, bare: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    launch = [sys.executable, "-c", BARE, str(ROOT / "minigpt_hf")] if bare else [sys.executable, "-m", "minigpt_hf",
                                                                                  "prepare-data"]
    r = _run([*launch, "--out_dir", str(out), "--dataset", str(corpus),
              "--num_proc", str(num_proc), "--shard_size", str(shard_size), "--val_tokens", str(val_tokens)])
    r["inner"] = float(re.search(r"wrote \S+ in ([\d.]+) s:", r["out"]).group(1))
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


def stages(corpus: Path, workdir: Path, limit_tokens: int) -> dict:
    """Seconds per million tokens of each stage, both ways, in this one process (no pool): reading the documents,
    encoding them, moving them to a worker and back (pickling both ways, as multiprocessing does), writing shards."""
    import pickle

    import numpy as np
    import pyarrow.parquet as pq
    from datasets import load_dataset

    sys.path.insert(0, str(ROOT))
    from minigpt_hf import data

    files = sorted((corpus / "data").glob("*.parquet"))
    t = {}
    # reference: datasets' rows as dicts, one document per task in chunks of 16, [eot] + encode_ordinary per doc
    start, docs, n = time.perf_counter(), [], 0
    for doc in load_dataset(str(corpus), split="train", streaming=True):
        docs.append(doc)
        n += len(doc["text"]) // 4
        if n >= limit_tokens:
            break
    t["reference read"] = time.perf_counter() - start
    _reference_tokenize({"text": ""})
    start = time.perf_counter()
    results = [_reference_tokenize(d) for d in docs]
    t["reference encode"] = time.perf_counter() - start
    tokens = sum(map(len, results))
    start = time.perf_counter()
    for k in range(0, len(docs), 16):
        pickle.loads(pickle.dumps(docs[k : k + 16]))
        pickle.loads(pickle.dumps(results[k : k + 16]))
    t["reference transfer"] = time.perf_counter() - start
    stream = np.concatenate(results)
    # ours: the worker reads row groups as Arrow, encodes them in batches, sends back one array per task
    tasks = [task for f in files for task in data._parquet_tasks(f, "text", 0, str(f))]
    start, columns, rows = time.perf_counter(), [], 0
    for task in tasks:
        columns.append(pq.ParquetFile(task[1]).read_row_groups(task[2], columns=["text"]).column(0).slice(task[3]))
        rows += len(columns[-1])
        if rows >= len(docs):
            break
    t["ours read"] = time.perf_counter() - start
    data._warm_up()
    start = time.perf_counter()
    outs = [data._encode_column(c) for c in columns]
    t["ours encode"] = time.perf_counter() - start
    start = time.perf_counter()
    for task, out in zip(tasks, outs):
        pickle.loads(pickle.dumps(task))
        pickle.loads(pickle.dumps(out))
    t["ours transfer"] = time.perf_counter() - start
    ours_tokens = sum(len(o[0]) for o in outs)
    # writing: np.save as fineweb.py does, against the hashing writer (both fsync-free np.save vs fsync + rename)
    shards = workdir / "stage-shards"
    shards.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for k in range(0, len(stream), 10_000_000):
        np.save(shards / f"ref_{k}", stream[k : k + 10_000_000])
    t["reference write"] = time.perf_counter() - start
    start = time.perf_counter()
    for k in range(0, len(stream), 10_000_000):
        data._write_shard(shards / f"ours_{k}.npy", stream[k : k + 10_000_000], "bench")
    t["ours write"] = time.perf_counter() - start
    shutil.rmtree(shards)
    # encoding text never seen before: one pass over the distinct documents, ours with an empty cache
    from minigpt_hf import bpe_batch

    unique = json.loads((corpus / "corpus.json").read_text())["unique_documents"]
    first = pq.read_table(files[0], columns=["text"]).column(0).slice(0, unique).combine_chunks()
    texts = first.to_pylist()
    start = time.perf_counter()
    cold_tokens = sum(len(_reference_tokenize({"text": x})) for x in texts)
    cold = {"reference encode, unseen text": time.perf_counter() - start}
    bpe_batch._table = bpe_batch._PartTable()
    start = time.perf_counter()
    rows = max(1, len(first) * data.TASK_BYTES // first.nbytes)
    for k in range(0, len(first), rows):
        data._encode_column(first.slice(k, rows))
    cold["ours encode, unseen text"] = time.perf_counter() - start
    per = {k: v / ((tokens if k.startswith("reference") else ours_tokens) / 1e6) for k, v in t.items()}
    per.update({k: v / (cold_tokens / 1e6) for k, v in cold.items()})
    print(f"stages over {tokens:,} tokens ({len(docs):,} documents), one process, seconds per million tokens:")
    print("| stage | reference | ours |\n|---|---|---|")
    for stage in ("read", "encode", "transfer", "write", "encode, unseen text"):
        print(f"| {stage} | {per['reference ' + stage]:.3f} | {per['ours ' + stage]:.3f} |")
    print(f"(unseen text: the {unique:,} distinct documents once, {cold_tokens:,} tokens, ours from an empty cache)")
    return per


def projection(per: dict, processes=(16, 64), tokens: float = 10e9) -> dict:
    """Hours for `tokens` from the stage timings: the workers (encode text never seen, plus reading where the worker
    reads) scale with the processes, one core each; the main process's serial stages (reading for the reference,
    moving results, writing) are the ceiling."""
    worker = {"reference": per["reference encode, unseen text"],
              "ours": per["ours encode, unseen text"] + per["ours read"]}
    main = {"reference": per["reference read"] + per["reference transfer"] + per["reference write"],
            "ours": per["ours transfer"] + per["ours write"]}
    return {name: {p: tokens / 1e6 / min(p / worker[name], 1 / main[name]) / 3600 for p in processes}
            for name in worker}


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3; 0: --stages only)")
    parser.add_argument("--shard_size", type=int, default=10_000_000, help="tokens per shard (default 10M)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/minigpt_bench_data"))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--bare", action="store_true",
                        help="also run prepare-data without the package __init__ (ours-bare): the command's own cost")
    parser.add_argument("--stages", type=int, default=0, metavar="TOKENS",
                        help="first time each stage on about TOKENS tokens, in one process (0: skip)")
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
    per_stage = stages(corpus, args.workdir, args.stages) if args.stages else None
    if not args.rounds:
        return {"corpus": facts, "stages_s_per_mtok": per_stage}
    rows = {"reference": [], "ours": [], **({"ours-bare": []} if args.bare else {})}
    val = min(args.shard_size, facts["tokens"] // 10)
    for k in range(args.rounds):
        runs = [("reference", run_reference(corpus, args.workdir / "out-reference", args.num_proc, args.shard_size)),
                ("ours", run_ours(corpus, args.workdir / "out-ours", args.num_proc, args.shard_size, val))]
        if k == 0 and not same_tokens(args.workdir / "out-reference", args.workdir / "out-ours"):
            raise SystemExit("the two wrote different tokens")
        if args.bare:
            runs.append(("ours-bare", run_ours(corpus, args.workdir / "out-ours", args.num_proc, args.shard_size, val,
                                               bare=True)))
        for name, r in runs:
            rows[name].append(r)
            print(f"round {k + 1} {name:9s}: {r['wall']:6.2f} s wall ({r['inner']:6.2f} s after start-up), "
                  f"{r['cpu']:6.2f} CPU s, {facts['tokens'] / r['wall'] / 1e6:5.2f} Mtok/s", flush=True)
    ratios = [a["wall"] / b["wall"] for a, b in zip(rows["reference"], rows["ours"], strict=True)]
    inner = [a["inner"] / b["inner"] for a, b in zip(rows["reference"], rows["ours"], strict=True)]
    bare = [a["wall"] / b["wall"] for a, b in zip(rows["reference"], rows.get("ours-bare", []), strict=False)]
    med = {name: statistics.median(r["wall"] for r in rs) for name, rs in rows.items()}
    mtok = {name: facts["tokens"] / med[name] / 1e6 for name in rows}
    hours = {name: {p: 10e9 / (mtok[name] * 1e6 / args.num_proc * p) / 3600 for p in (16, 64)} for name in rows}
    result = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]), "corpus": facts,
              "num_proc": args.num_proc, "rounds": args.rounds, "median_wall_s": med, "mtok_per_s": mtok,
              "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
              "ratio_after_startup_median": statistics.median(inner), "hours_10B": hours,
              "ratio_bare_median": statistics.median(bare) if bare else None,
              "ratio_bare_range": [min(bare), max(bare)] if bare else None,
              "cpu_s_median": {n: statistics.median(r["cpu"] for r in rs) for n, rs in rows.items()},
              "stages_s_per_mtok": per_stage, "hours_10B_from_stages": projection(per_stage) if per_stage else None}
    names = list(rows)
    print("\n| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    print("| whole process, median | " + " | ".join(f"{med[n]:.2f} s, {mtok[n]:.2f} Mtok/s" for n in names) + " |")
    print("| CPU seconds, median | " + " | ".join(f"{result['cpu_s_median'][n]:.1f}" for n in names) + " |")
    print("| 10B tokens at 16 / 64 processes (linear) | " + " | ".join(
        f"{hours[n][16]:.2f} h / {hours[n][64]:.2f} h" for n in names) + " |")
    if per_stage:
        proj = result["hours_10B_from_stages"]
        print(f"| 10B tokens at 16 / 64 processes (stages) | {proj['reference'][16]:.2f} h / "
              f"{proj['reference'][64]:.2f} h | {proj['ours'][16]:.2f} h / {proj['ours'][64]:.2f} h |")
    print(f"\nratio ours/reference (whole process): {result['ratio_median']:.2f}x median, range "
          f"{min(ratios):.2f}-{max(ratios):.2f}; after start-up: {result['ratio_after_startup_median']:.2f}x"
          + (f"; ours-bare/reference: {result['ratio_bare_median']:.2f}x (range {min(bare):.2f}-{max(bare):.2f})"
             if bare else "") + f"\nmachine: {result['machine']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
