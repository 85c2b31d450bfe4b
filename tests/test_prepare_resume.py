"""Data preparation at scale (issue 16): resumable after any kill, refusing a changed command, a no-op when done,
the same bytes for any --num_proc, and the batched encoder that makes it fast (tiktoken's ids exactly).

Kills at chosen points run the preparation in a forked child that SIGKILLs itself there (MINIGPT_PREPARE_KILL);
kills at random moments hit a real `python -m minigpt_hf prepare-data` process group.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import ROOT
from minigpt_hf import bpe_batch, data
from minigpt_hf.commands import prepare_data as cli
from minigpt_hf.tokenization import EOT_ID, get_encoding


def pieces(n: int, seed: int = 0) -> list:
    """`n` documents of real English (20-60 lines of the embedded plays), two of them blank and one None."""
    rng = random.Random(seed)
    lines = "\n".join(data.iter_embedded_documents()).split("\n")
    docs = []
    for _ in range(n):
        start = rng.randrange(len(lines) - 60)
        docs.append("\n".join(lines[start : start + rng.randint(20, 60)]))
    docs[7], docs[40], docs[41] = "  \n ", "", None
    return docs


DOCS = pieces(420)  # ~95k tokens
SHARD, VAL = 6000, 4000  # about 16 shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A hub-style parquet dataset folder, and the same documents as --input files (jsonl, txt, parquet)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "ds" / "data").mkdir(parents=True)
    for k, part in enumerate((DOCS[:150], DOCS[150:300], DOCS[300:])):
        pq.write_table(pa.table({"text": part, "id": list(range(len(part)))}),
                       root / "ds" / "data" / f"train-{k:05d}-of-00003.parquet", row_group_size=40)
    files = root / "files"
    (files / "b_txt").mkdir(parents=True)
    (files / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:200]))
    for i, d in enumerate(DOCS[200:230]):
        (files / "b_txt" / f"{i:03d}.txt").write_text(d or "", encoding="utf-8")
    pq.write_table(pa.table({"text": DOCS[230:]}), files / "c.parquet", row_group_size=25)
    return root


def argv(out, *source, num_proc=2, **flags):
    flags = {"shard_size": SHARD, "val_tokens": VAL, "num_proc": num_proc, **flags}
    return ["--out_dir", str(out), *map(str, source), *(f"--{k}={v}" for k, v in flags.items())]


def snapshot(folder: Path) -> dict:
    """Every file but the lock, by name (the manifest without its time stamp)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.name == data.DATA_LOCK_NAME:
            continue
        if p.name == data.MANIFEST_NAME:
            out[p.name] = {k: v for k, v in json.loads(p.read_text()).items() if k != "created"}
        else:
            out[p.name] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def references(corpus, tmp_path_factory):
    """Uninterrupted preparations of each source, prepared once."""
    root = tmp_path_factory.mktemp("references")
    sources = {"dataset": ["--dataset", corpus / "ds"], "files": ["--input", corpus / "files"]}
    refs = {}
    for name, source in sources.items():
        assert cli.main(argv(root / name, *source, num_proc=1)) == 0
        refs[name] = snapshot(root / name)
        assert data.verify_dataset(root / name) == []
    return sources, refs


def killed_child(args, point: str, output=os.devnull):
    """Run the CLI (or a function) in a forked child with MINIGPT_PREPARE_KILL=point, printing to `output`: whether it
    died of SIGKILL (or, for a point that sends another signal, its exit code)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            os.environ["MINIGPT_PREPARE_KILL"] = point
            sys.stdout = sys.stderr = open(output, "w", buffering=1)
            code = args() if callable(args) else cli.main(args)
        finally:
            sys.stdout.flush()
            os._exit(code if isinstance(code, int) else 3)
    _, status = os.waitpid(pid, 0)
    if point.count(":") == 2:
        return os.waitstatus_to_exitcode(status)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


# ----------------------------------------------------------------------------------------------------------------------
# resume


POINTS = ["shard-write:0", "shard-write:5", "shard-written:2", "journal:0", "journal:9", "manifest", "published"]


@pytest.mark.parametrize("source", ["dataset", "files"])
def test_killed_at_every_kind_of_moment_then_rerun_gives_the_same_bytes(source, references, tmp_path, capsys):
    sources, refs = references
    for point in POINTS:
        out = tmp_path / point.replace(":", "-")
        assert killed_child(argv(out, *sources[source]), point), point
        assert data.MANIFEST_NAME not in os.listdir(out) or point == "published"
        capsys.readouterr()
        assert cli.main(argv(out, *sources[source], num_proc=1)) == 0  # another --num_proc: the same bytes
        lines = capsys.readouterr().out.splitlines()
        if point == "published":
            assert lines[0].startswith("already prepared: ")
        elif point == "shard-write:0":  # nothing finished: starts from the beginning
            assert lines[0].startswith("wrote ")
        else:
            assert lines[0].startswith(f"resuming {out}: ") and "kept (last " in lines[0], lines
            assert len(lines) == 2 and lines[1].startswith("wrote ")
        assert snapshot(out) == refs[source], point


def test_the_resume_line_says_from_which_shard_and_after_how_many_documents(references, tmp_path, capsys):
    sources, refs = references
    out = tmp_path / "out"
    assert killed_child(argv(out, *sources["dataset"]), "journal:3")
    journal = json.loads((out / data.JOURNAL_NAME).read_text())
    assert [s["file"] for s in journal["shards"]] == ["ds_val_000000.npy"] + [f"ds_train_{i:06d}.npy" for i in range(3)]
    docs, offset = journal["position"]["documents"], journal["position"]["offset"]
    assert 0 < docs < len(DOCS) and journal["stats"]["tokens"] == VAL + 3 * SHARD
    capsys.readouterr()
    assert cli.main(argv(out, *sources["dataset"])) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"resuming {out}: 4 finished shards kept (last ds_train_000002.npy); continuing with shard 5 "
                     f"after {docs:,} documents" + (f" and {offset:,} tokens of the next" if offset else ""))
    assert snapshot(out) == refs["dataset"]


def test_killed_with_max_tokens_then_the_same_bytes(references, tmp_path):
    sources, _ = references
    args = lambda out, **kw: argv(out, *sources["dataset"], max_tokens=51_234, **kw)  # noqa: E731
    assert cli.main(args(tmp_path / "ref", num_proc=1)) == 0
    for point in ("journal:4", "journal:8", "manifest"):  # 8: the last shard, cut by max_tokens
        out = tmp_path / point.replace(":", "-")
        assert killed_child(args(out), point)
        assert cli.main(args(out)) == 0
        assert snapshot(out) == snapshot(tmp_path / "ref")
    assert sum(data.read_manifest(tmp_path / "ref")["tokens"].values()) == 51_234


def test_a_source_that_changed_under_a_resume_is_refused_and_kept(tmp_path):
    out, kwargs = tmp_path / "out", {"prefix": "t", "shard_size": 3001, "val_tokens": 1000, "progress": False,
                                     "source": {"name": "mine"}}
    assert killed_child(lambda: data.prepare_shards(DOCS, out, **kwargs), "journal:2")
    journal = json.loads((out / data.JOURNAL_NAME).read_text())
    assert journal["position"]["offset"] > 0  # the third shard ended inside a document
    changed = list(DOCS)
    changed[journal["position"]["documents"]] = "short"
    with pytest.raises(data.SourceChangedError, match=f"delete {out / data.JOURNAL_NAME} to start again"):
        data.prepare_shards(changed, out, **kwargs)
    assert json.loads((out / data.JOURNAL_NAME).read_text())["shards"] == journal["shards"]  # nothing discarded
    assert data.prepare_shards(DOCS, out, **kwargs)["shards"][:3] == journal["shards"]


def test_sigterm_stops_like_ctrl_c_with_one_line_and_resumes(references, tmp_path, capsys):
    sources, refs = references
    out = tmp_path / "out"
    assert killed_child(argv(out, *sources["dataset"]), "journal:3:TERM", output=tmp_path / "log") == 130
    assert (tmp_path / "log").read_text().splitlines() == [
        f"stopped by SIGTERM: 4 finished shards kept in {out}; run the same command again to resume", "interrupted"]
    assert cli.main(argv(out, *sources["dataset"])) == 0
    assert capsys.readouterr().out.startswith(f"resuming {out}: 4 finished shards kept")
    assert snapshot(out) == refs["dataset"]


def _die_on_three(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
    return x


def test_a_worker_that_dies_stops_the_run_instead_of_hanging_it(monkeypatch):
    monkeypatch.setattr(data, "WORKER_CHECK_EVERY", 0.3)
    start = time.time()
    with pytest.raises(ChildProcessError, match=r"a tokenising worker died \(killed by signal 9, out of memory\?\); "
                                                 "the finished shards are kept"):
        with data._ordered_map(_die_on_three, iter(range(10)), num_proc=2) as results:
            list(results)
    assert time.time() - start < 60


def test_killed_twice_in_a_row_still_the_same(references, tmp_path):
    sources, refs = references
    out = tmp_path / "out"
    assert killed_child(argv(out, *sources["files"]), "shard-write:4")
    assert killed_child(argv(out, *sources["files"], num_proc=1), "journal:11")
    assert cli.main(argv(out, *sources["files"])) == 0
    assert snapshot(out) == refs["files"]


@pytest.mark.parametrize("source", ["dataset", "dataset-large-row-groups", "files", "jsonl-dataset", "embedded"])
def test_resuming_does_not_tokenise_what_is_done(source, corpus, tmp_path, monkeypatch, capsys):
    """The resumed run tokenises only the documents after the last finished shard (and the one it cut)."""
    if source == "dataset-large-row-groups":  # row groups of many tasks' worth: read by the main process
        monkeypatch.setattr(data, "TASK_BYTES", 2000)
        source = "dataset"
    if source == "jsonl-dataset":  # anything but plain parquet goes through load_dataset(streaming=True).skip(n)
        (tmp_path / "js").mkdir()
        (tmp_path / "js" / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
        args = ["--dataset", tmp_path / "js"]
    elif source == "embedded":
        args = []
    else:
        args = {"dataset": ["--dataset", corpus / "ds"], "files": ["--input", corpus / "files"]}[source]
    sizes = {"shard_size": 60_000, "val_tokens": 30_000} if source == "embedded" else {}
    assert cli.main(argv(tmp_path / "ref", *args, num_proc=1, **sizes)) == 0
    out = tmp_path / "out"
    assert killed_child(argv(out, *args, num_proc=1, **sizes), "journal:5")
    journal = json.loads((out / data.JOURNAL_NAME).read_text())
    seen = []
    encode = data.encode_task
    monkeypatch.setattr(data, "encode_task", lambda task: (r := encode(task), seen.append(len(r[1])))[0])
    capsys.readouterr()
    assert cli.main(argv(out, *args, num_proc=1, **sizes)) == 0
    assert capsys.readouterr().out.startswith(f"resuming {out}")
    total = len(list(data.iter_embedded_documents())) if source == "embedded" else len(DOCS)
    assert sum(seen) == total - journal["position"]["documents"]
    assert snapshot(out) == snapshot(tmp_path / "ref")


def test_a_not_streamed_dataset_resumes_too(corpus, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    args = ["--dataset", tmp_path / "js", "--streaming", "false"]
    assert cli.main(argv(tmp_path / "ref", *args, num_proc=1)) == 0
    assert killed_child(argv(tmp_path / "out", *args, num_proc=1), "journal:6")
    assert cli.main(argv(tmp_path / "out", *args, num_proc=1)) == 0
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "ref")
    assert data.read_manifest(tmp_path / "out")["source"]["streaming"] is False


def test_ctrl_c_keeps_the_finished_shards_and_says_so(references, tmp_path, monkeypatch, capsys):
    sources, refs = references
    write, calls = data._write_shard, []

    def interrupted_in_the_third(path, tokens, tag):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return write(path, tokens, tag)

    monkeypatch.setattr(data, "_write_shard", interrupted_in_the_third)
    out = tmp_path / "out"
    assert cli.main(argv(out, *sources["dataset"], num_proc=1)) == 130
    captured = capsys.readouterr()
    assert captured.out == f"interrupted: 2 finished shards kept in {out}; run the same command again to resume\n"
    assert captured.err == "interrupted\n"
    monkeypatch.setattr(data, "_write_shard", write)
    assert cli.main(argv(out, *sources["dataset"], num_proc=1)) == 0
    assert snapshot(out) == refs["dataset"]


@pytest.mark.slow
def test_random_sigkills_of_a_real_process_then_the_same_bytes(tmp_path):
    """`python -m minigpt_hf prepare-data` killed (its whole process group) at random moments of its work: each
    time after it has written at least one shard of its own, so every kill lands in the middle of the work."""
    (tmp_path / "ds" / "data").mkdir(parents=True)
    docs = [d for _ in range(8) for d in DOCS]  # ~1.1M tokens
    pq.write_table(pa.table({"text": docs}), tmp_path / "ds" / "data" / "train-00000-of-00001.parquet",
                   row_group_size=300)
    sizes = {"shard_size": 10_000, "val_tokens": 5000}  # ~110 shards
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert cli.main(argv(ref, "--dataset", tmp_path / "ds", num_proc=1, **sizes)) == 0
    command = [sys.executable, "-m", "minigpt_hf", "prepare-data", *argv(out, "--dataset", tmp_path / "ds", **sizes)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def shards_done():
        try:
            return len(json.loads((out / data.JOURNAL_NAME).read_text())["shards"])
        except (OSError, ValueError):
            return 0

    # each kill comes when the run has written a randomly chosen number of shards of its own (not after a random
    # delay: on a fast machine the whole preparation takes well under a second, and a delay could outlast it)
    total = len(data.read_manifest(ref)["shards"])
    rng, outputs, kills = random.Random(16), [], []
    for _ in range(2):
        before = shards_done()
        target = min(before + rng.randint(1, 30), total - 20)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and shards_done() < target:
            time.sleep(0.001)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills.append(shards_done())
        outputs.append(proc.communicate(timeout=60)[0])
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    assert len(kills) == 2 and all(0 < k < total for k in kills), kills
    assert sum(o.startswith("resuming ") for o in [*outputs[1:], final.stdout]) >= len(kills), outputs
    assert snapshot(out) == snapshot(ref)


# ----------------------------------------------------------------------------------------------------------------------
# another command, the same command on a finished dataset


def test_a_changed_command_is_refused_naming_the_differences(references, corpus, tmp_path, capsys):
    sources, refs = references
    out = tmp_path / "out"
    assert cli.main(argv(out, *sources["dataset"], num_proc=1)) == 0
    cases = [
        (argv(out, *sources["dataset"], shard_size=7000), ["--shard_size 6000 -> 7000"]),
        (argv(out, *sources["dataset"], text_field="id", max_tokens=50_000),
         ["--text_field 'text' -> 'id'", "--max_tokens None -> 50000"]),
        (argv(out, *sources["dataset"], val_tokens=0, prefix="web"),
         ["--val_tokens 4000 -> 0", "--prefix 'ds' -> 'web'"]),
        (argv(out, *sources["files"]), ["source --dataset", f"-> --input {corpus / 'files'}"]),
    ]
    capsys.readouterr()
    for args, differences in cases:
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {out} already holds a dataset prepared by another "
                                                       "command (")
        assert all(d in err for d in differences), (err, differences)
        assert "choose another --out_dir or pass --overwrite" in err
    assert snapshot(out) == refs["dataset"]
    # an interrupted one too; --overwrite discards it
    assert killed_child(argv(tmp_path / "b", *sources["dataset"]), "journal:2")
    assert cli.main(argv(tmp_path / "b", *sources["dataset"], shard_size=5000)) == 2
    err = capsys.readouterr().err
    assert "holds an unfinished preparation of another command (--shard_size 6000 -> 5000)" in err
    assert "pass --overwrite to discard it" in err
    assert cli.main(argv(tmp_path / "b", *sources["dataset"], shard_size=5000) + ["--overwrite"]) == 0
    assert data.verify_dataset(tmp_path / "b") == []
    assert {s["tokens"] for s in data.read_manifest(tmp_path / "b")["shards"][1:-1]} == {5000}


def test_changed_input_files_are_a_changed_command(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:100]))
    out = tmp_path / "out"
    assert cli.main(argv(out, "--input", tmp_path / "a.jsonl")) == 0
    with open(tmp_path / "a.jsonl", "a") as f:
        f.write(json.dumps({"text": "one more"}) + "\n")
    capsys.readouterr()
    assert cli.main(argv(out, "--input", tmp_path / "a.jsonl")) == 2
    assert "the input files changed (1 file" in capsys.readouterr().err


def test_the_same_command_on_a_finished_dataset_is_a_no_op(references, tmp_path, capsys):
    sources, refs = references
    out = tmp_path / "out"
    assert cli.main(argv(out, *sources["dataset"])) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != data.DATA_LOCK_NAME}
    capsys.readouterr()
    assert cli.main(argv(out, *sources["dataset"], num_proc=1)) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.count("\n") == 1
    assert captured.out.startswith(f"already prepared: {out} (train ") and captured.out.endswith("nothing to do\n")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != data.DATA_LOCK_NAME} == stamps
    # a shard gone since: said in one line, not "already prepared"
    next(out.glob("ds_train_000003.npy")).unlink()
    assert cli.main(argv(out, *sources["dataset"])) == 2
    assert "shard ds_train_000003.npy is missing" in capsys.readouterr().err


def test_prepare_data_after_the_quick_start_is_a_no_op(shakespeare, capsys):
    """Issue 19: `minigpt prepare-data --out_dir data/shakespeare`, from the README, after training made it."""
    assert cli.main(["--out_dir", str(shakespeare), "--num_proc", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"already prepared: {shakespeare} (train ")


def test_num_proc_one_and_two_give_the_same_bytes(references, tmp_path):
    sources, refs = references
    for source in ("dataset", "files"):
        assert cli.main(argv(tmp_path / source, *sources[source], num_proc=2)) == 0
        assert snapshot(tmp_path / source) == refs[source]


def test_parquet_folders_read_directly_give_what_load_dataset_gives(corpus, tmp_path):
    """--dataset on a plain parquet folder reads the files datasets resolves; the documents are load_dataset's."""
    direct = data.prepare_shards(data.dataset_source(str(corpus / "ds")), tmp_path / "a", prefix="x",
                                 shard_size=SHARD, val_tokens=VAL, progress=False)
    through = data.prepare_shards(data.iter_hf_documents(str(corpus / "ds")), tmp_path / "b", prefix="x",
                                  shard_size=SHARD, val_tokens=VAL, progress=False)
    assert [s["sha256"] for s in direct["shards"]] == [s["sha256"] for s in through["shards"]]
    assert direct["documents"] == through["documents"] == len(DOCS) - 3
    assert direct["skipped"] == {"empty": 2, "not_text": 1, "invalid_utf8": 0}


def test_progress_shows_tokens_per_second_and_an_eta(references, tmp_path, monkeypatch, capsys):
    sources, _ = references
    monkeypatch.setattr(data, "PROGRESS_EVERY", 0.0)
    for extra, eta in (({"max_tokens": 60_000}, True), ({}, True)):  # the total: max_tokens, or the row count
        out = tmp_path / str(len(extra))
        data.prepare_shards(data.dataset_source(str(sources["dataset"][1])), out, prefix="x", shard_size=SHARD,
                            val_tokens=VAL, **extra)
        err = capsys.readouterr().err
        assert f"tokenizing into {out}: " in err and "M tok/s" in err and ("ETA 0:" in err) == eta


# ----------------------------------------------------------------------------------------------------------------------
# the encoder: tiktoken's ids, batched


def reference_ids(texts):
    return np.concatenate([[EOT_ID] + get_encoding().encode_ordinary(t) for t in texts]).astype(np.uint16)


def test_batched_encoding_gives_tiktokens_ids_on_every_kind_of_whitespace():
    rng = random.Random(19)
    alphabet = [*"ab Z9'.,-\n\t\r\x0b\x0c", "'s", "'ll", "'VE", "\u00a0", "\u3000", "\u2003", "\u200a", "\x85",
                "\u1680", "\u2028", "\u2029", "\u202f", "\u205f", "\x1c", "\x1f", "é", "日本", "😀", "  ", "\n\n",
                "١٢", "Ⅻ", "\u200b", "\ufeff"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(4000)]
    texts = [t for t in texts if t.strip()]
    bpe_batch._table = bpe_batch._PartTable()  # cold, then warm
    for kind in (pa.string(), pa.large_string(), "sliced"):
        array = pa.array(texts, pa.string()).slice(5, 1500) if kind == "sliced" else pa.array(texts, kind)
        tokens, counts = bpe_batch.encode_arrow(array)
        expected = [reference_ids([t]) for t in array.to_pylist()]
        assert tokens.tolist() == np.concatenate(expected).tolist()
        assert counts.tolist() == [len(e) for e in expected]


def test_batched_encoding_of_the_embedded_corpus_and_of_odd_documents():
    plays = list(data.iter_embedded_documents())[:6]
    tokens, counts = bpe_batch.encode_arrow(pa.array(plays))
    assert tokens.tolist() == reference_ids(plays).tolist() and counts.sum() == len(tokens)
    odd = ["x", " leading", "trailing  \n", "\ud83d\ude00 paired surrogates", "lone \ud800 surrogate", b"bytes",
           b"\xff\xfe", 7, None, "", " \u3000\n", "\x1c", "a" * 5000, "   x"]
    tokens, counts, reasons = data.encode_task(("docs", odd))
    expected = [data.tokenize(d) for d in odd]
    assert reasons.tolist() == [0 if isinstance(e, np.ndarray) else 1 + data.SKIP_REASONS.index(e) for e in expected]
    assert tokens.tolist() == np.concatenate([e for e in expected if isinstance(e, np.ndarray)]).tolist()
    column = pa.array(["x", None, "", " \u3000\n", "\x1c", "   x", "trailing  \n", "\x1cx"])
    tokens, counts, reasons = data.encode_task(("arrow", column))
    expected = [data.tokenize(d) for d in column.to_pylist()]
    assert reasons.tolist() == [0 if isinstance(e, np.ndarray) else 1 + data.SKIP_REASONS.index(e) for e in expected]
    assert tokens.tolist() == np.concatenate([e for e in expected if isinstance(e, np.ndarray)]).tolist()


def test_summary_says_one_shard_not_one_shards(tmp_path):
    manifest = data.prepare_shards(DOCS[:30], tmp_path, prefix="t", shard_size=10**6, val_tokens=100, progress=False)
    summary = data.manifest_summary(manifest)
    assert "in 1 shard," in summary and "in 1 shard;" in summary and "1 shards" not in summary


@pytest.mark.slow
def test_the_benchmark_runs_at_a_tiny_size(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_data

    result = bench_data.main(["--tokens", "60000", "--rounds", "1", "--num_proc", "2", "--shard_size", "20000",
                              "--workdir", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert result["corpus"]["tokens"] >= 60000 and json.loads((tmp_path / "r.json").read_text())["num_proc"] == 2
    assert set(result["mtok_per_s"]) == {"reference", "ours"} and result["hours_10B"]["ours"][64] > 0
    assert data.verify_dataset(tmp_path / "out-ours") == []


def test_the_pool_gets_at_most_four_tasks_per_process_ahead_of_the_writer():
    pulled = []

    def tasks():
        for i in range(60):
            pulled.append(i)
            yield i

    with data._ordered_map(abs, tasks(), num_proc=2) as results:
        for consumed, _ in enumerate(results, 1):
            time.sleep(0.01)  # a slow writer
            assert len(pulled) <= consumed + 4 * 2 + 1
    assert len(pulled) == 60
