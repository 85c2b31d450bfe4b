"""Tests of minigpt_hf.data: shard writing, sources, the distributed loader and the embedded corpus."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT
from minigpt_hf.commands import prepare_data as cli
from minigpt_hf import data
from minigpt_hf.tokenization import EOT_ID, get_encoding

DOCS = [f"Document {i}: " + "to be or not to be, that is the question. " * (i % 7 + 1) for i in range(60)]


def ids(doc):
    return [EOT_ID] + get_encoding().encode_ordinary(doc)


def all_tokens(out_dir, manifest):
    return np.concatenate([np.load(out_dir / s["file"]) for s in manifest["shards"]])


def prepare(documents, out_dir, **kwargs):
    kwargs = {"prefix": "t", "shard_size": 300, "val_tokens": 200, "progress": False, **kwargs}
    return data.prepare_shards(documents, out_dir, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# writing


def test_shards_hold_eot_then_the_document_tokens(tmp_path):
    manifest = prepare(DOCS, tmp_path)
    expected = np.concatenate([ids(d) for d in DOCS])
    assert all_tokens(tmp_path, manifest).tolist() == expected.tolist()
    assert manifest["tokens"]["val"] == 200 and manifest["tokens"]["train"] == len(expected) - 200
    for split in ("train", "val"):
        assert manifest["tokens"][split] == sum(s["tokens"] for s in manifest["shards"] if s["split"] == split)
    names = [s["file"] for s in manifest["shards"][:3]]
    assert names == ["t_val_000000.npy", "t_train_000000.npy", "t_train_000001.npy"]
    for s in manifest["shards"]:
        with open(tmp_path / s["file"], "rb") as f:  # the .npy header carries dtype and shape
            np.lib.format.read_magic(f)
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        assert dtype == np.uint16 and shape == (s["tokens"],)
    assert all(s["tokens"] == 300 for s in manifest["shards"][1:-1])
    assert manifest["documents"] == len(DOCS) and manifest["tokenizer"]["eot_id"] == EOT_ID
    assert manifest["dtype"] == "uint16" and json.loads((tmp_path / "manifest.json").read_text()) == manifest


def test_tokenize_and_its_skips():
    tokens = data.tokenize(DOCS[3])
    assert tokens.dtype == np.uint16 and tokens.tolist() == ids(DOCS[3])
    assert data.tokenize(DOCS[3].encode()).tolist() == ids(DOCS[3])
    assert [data.tokenize(d) for d in ["", " \n", None, 3, b"\xff"]] == ["empty"] * 2 + ["not_text"] * 2 + [
        "invalid_utf8"
    ]


def test_a_document_longer_than_a_shard_spans_several(tmp_path):
    long = " ".join(DOCS)
    manifest = prepare([long, DOCS[0]], tmp_path, shard_size=64, val_tokens=10)
    assert all_tokens(tmp_path, manifest).tolist() == ids(long) + ids(DOCS[0])
    assert [s["tokens"] for s in manifest["shards"][:3]] == [10, 64, 64]


def test_max_tokens_cuts_the_stream(tmp_path):
    manifest = prepare(DOCS, tmp_path, max_tokens=777)
    assert sum(manifest["tokens"].values()) == 777
    assert all_tokens(tmp_path, manifest).tolist() == np.concatenate([ids(d) for d in DOCS])[:777].tolist()


def test_two_processes_write_the_same_bytes(tmp_path):
    one, two = prepare(DOCS, tmp_path / "one", num_proc=1), prepare(DOCS, tmp_path / "two", num_proc=2)
    assert one["shards"] == two["shards"]
    for s in one["shards"]:
        assert (tmp_path / "one" / s["file"]).read_bytes() == (tmp_path / "two" / s["file"]).read_bytes()


def test_refuses_to_overwrite_without_the_flag(tmp_path):
    prepare(DOCS, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != data.DATA_LOCK_NAME}
    with pytest.raises(FileExistsError, match="--overwrite") as e:
        prepare(DOCS[:5], tmp_path)
    assert str(tmp_path) in str(e.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != data.DATA_LOCK_NAME} == before
    manifest = prepare(DOCS[:5], tmp_path, overwrite=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted([s["file"] for s in manifest["shards"]] + ["manifest.json", data.DATA_LOCK_NAME])
    assert all_tokens(tmp_path, manifest).tolist() == np.concatenate([ids(d) for d in DOCS[:5]]).tolist()


def test_an_interrupted_run_leaves_nothing_that_loads(tmp_path, monkeypatch):
    write, calls = data._write_shard, []

    def crash_in_the_second_shard(path, tokens, tag):
        calls.append(path)
        if len(calls) == 2:
            path.with_name(f".{path.name}.tmp-{tag}").write_bytes(b"\x93NUMPY half a shard")
            raise KeyboardInterrupt
        write(path, tokens, tag)

    monkeypatch.setattr(data, "_write_shard", crash_in_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        prepare(DOCS, tmp_path)
    assert len(calls) == 2 and [p.name for p in tmp_path.iterdir()] == [data.DATA_LOCK_NAME]
    with pytest.raises(FileNotFoundError, match="minigpt prepare-data"):
        data.DistributedTokenLoader(tmp_path, "train", B=1, T=4)


def test_empty_input_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="empty input"):
        prepare([], tmp_path / "a")
    with pytest.raises(ValueError, match="empty input.*2 empty, 1 not_text"):
        prepare(["", "  \n", None], tmp_path / "b")
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="empty input"):
        data.iter_file_documents([tmp_path / "c"])
    with pytest.raises(ValueError, match="val_tokens"):
        prepare(DOCS[:2], tmp_path / "d", val_tokens=10_000)
    assert not (tmp_path / "d" / "manifest.json").exists()


# ------------------------------------------------------------------------------------------------------------------
# sources


def test_local_txt_jsonl_json_and_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "src"
    (src / "a_txt").mkdir(parents=True)
    (src / "a_txt" / "a.txt").write_text(DOCS[0], encoding="utf-8")
    (src / "a_txt" / "b.txt").write_bytes(b"caf\xe9 latin-1, not UTF-8")
    (src / "a_txt" / "c.txt").write_text("", encoding="utf-8")
    (src / "d.jsonl").write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS[1:4])) + "\n")
    (src / "e.json").write_text(json.dumps([{"text": DOCS[4]}, {"text": 7}]))
    pq.write_table(pa.table({"text": DOCS[5:8], "n": [1, 2, 3]}), src / "f.parquet")
    manifest = prepare(data.iter_file_documents([src]), tmp_path / "out", val_tokens=0)
    assert all_tokens(tmp_path / "out", manifest).tolist() == np.concatenate([ids(d) for d in DOCS[:8]]).tolist()
    assert manifest["documents"] == 8
    assert manifest["skipped"] == {"empty": 1, "not_text": 1, "invalid_utf8": 1}
    assert manifest["tokens"]["val"] == 0 and not any(s["split"] == "val" for s in manifest["shards"])


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_missing_text_field_names_field_file_and_fields(tmp_path, suffix):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / f"x{suffix}"
    if suffix == ".jsonl":
        path.write_text(json.dumps({"content": "hello", "id": 1}) + "\n")
    else:
        pq.write_table(pa.table({"content": ["hello"], "id": [1]}), path)
    with pytest.raises(ValueError, match=r"no text field 'text' \(fields: content, id\)") as e:
        list(data.iter_file_documents([path]))
    assert str(path) in str(e.value) and "--text_field" in str(e.value)
    assert list(data.iter_file_documents([path], text_field="content")) == ["hello"]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.iter_file_documents([tmp_path / "nope.txt"])
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="x.csv: unsupported"):
        data.iter_file_documents([tmp_path / "x.csv"])
    (tmp_path / "y.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(ValueError, match="y.jsonl, line 2: invalid JSON"):
        list(data.iter_file_documents([tmp_path / "y.jsonl"]))


def test_a_datasets_folder_streams(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in DOCS[:3]) + "\n")
    assert list(data.iter_hf_documents(str(tmp_path / "ds"))) == DOCS[:3]
    with pytest.raises(ValueError, match="no text field 'body'"):
        next(data.iter_hf_documents(str(tmp_path / "ds"), text_field="body"))


# ------------------------------------------------------------------------------------------------------------------
# loading


def write_split(out_dir, lengths, seed=0, split="train"):
    """Shards of random tokens with the given lengths and their manifest; the token arrays."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 50257, n, dtype=np.uint16) for n in lengths]
    shards = [{"file": f"s_{split}_{i:06d}.npy", "split": split, "tokens": n} for i, n in enumerate(lengths)]
    out_dir.mkdir(parents=True, exist_ok=True)
    for s, a in zip(shards, arrays, strict=True):
        np.save(out_dir / s["file"], a)
    (out_dir / "manifest.json").write_text(json.dumps({"shards": shards, "tokens": {split: sum(lengths)}}))
    return arrays


def expected_windows(arrays, B, T, world_size, rank, steps):
    """(B, T+1) windows computed from the arrays: every rank reads B*T+1 tokens at p + B*T*rank, p advancing by
    B*T*world_size while all ranks fit; shards too short for a step are left out; wrap around."""
    stride, out = B * T * world_size, []
    usable = [a for a in arrays if len(a) >= stride + 1]
    while len(out) < steps:
        for a in usable:
            for p in range(0, len(a) - stride, stride):
                span = a[p + B * T * rank : p + B * T * rank + B * T + 1].astype(np.int64)
                out.append(np.stack([span[i * T : i * T + T + 1] for i in range(B)]))
    return out[:steps]


def data_loader_lite(arrays, B, T, rank, world_size, steps):
    """build-nanogpt's DataLoaderLite.next_batch, verbatim but for numpy, as (x, y) pairs."""
    shard, position, out = 0, B * T * rank, []
    for _ in range(steps):
        buf = arrays[shard][position : position + B * T + 1].astype(np.int64)
        out.append((buf[:-1].reshape(B, T), buf[1:].reshape(B, T)))
        position += B * T * world_size
        if position + (B * T * world_size + 1) > len(arrays[shard]):
            shard, position = (shard + 1) % len(arrays), B * T * rank
    return out


def test_ranks_stride_through_shards_and_wrap_around(tmp_path):
    arrays = write_split(tmp_path, [103, 77, 10, 50])  # the 10-token shard is too short for a step of 17
    B, T, W, steps = 2, 4, 2, 20
    for rank in range(W):
        loader = data.DistributedTokenLoader(tmp_path, "train", B, T, rank=rank, world_size=W)
        windows = [loader.next_window().numpy() for _ in range(steps)]
        assert [w.tolist() for w in windows] == [w.tolist() for w in expected_windows(arrays, B, T, W, rank, steps)]
        loader.reset()
        for w in windows:
            x, y = loader.next_batch()
            assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (B, T)
            assert x.tolist() == w[:, :-1].tolist() and y.tolist() == w[:, 1:].tolist()
    # the two ranks of one step read adjacent, non-overlapping B*T spans
    w0 = expected_windows(arrays, B, T, W, 0, 1)[0]
    w1 = expected_windows(arrays, B, T, W, 1, 1)[0]
    assert np.concatenate([w0[:, :-1].ravel(), w1[:, :-1].ravel()]).tolist() == arrays[0][: 2 * B * T].tolist()


def test_world_size_one_and_rank_zero_match_data_loader_lite(tmp_path):
    arrays = write_split(tmp_path, [103, 77, 50])
    for B, T, W in [(2, 4, 1), (3, 5, 1), (2, 4, 2)]:
        loader = data.DistributedTokenLoader(tmp_path, "train", B, T, rank=0, world_size=W)
        for x, y in data_loader_lite(arrays, B, T, 0, W, 25):
            bx, by = loader.next_batch()
            assert bx.tolist() == x.tolist() and by.tolist() == y.tolist()


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    write_split(tmp_path, [103, 77, 50])
    loader = data.DistributedTokenLoader(tmp_path, "train", 2, 4, rank=1, world_size=2)
    for _ in range(5):
        loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))
    assert state == {"split": "train", "shard": loader.shard, "position": loader.position, "tokens_per_step": 16,
                     "shard_file": f"s_train_{loader.shard:06d}.npy"}
    expected = [loader.next_window().tolist() for _ in range(12)]
    resumed = data.DistributedTokenLoader(tmp_path, "train", 2, 4, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert [resumed.next_window().tolist() for _ in range(12)] == expected
    other_rank = data.DistributedTokenLoader(tmp_path, "train", 2, 4, rank=0, world_size=2)
    other_rank.load_state_dict(state)  # the position is shared by all ranks
    assert other_rank.position == state["position"] and other_rank.shard == state["shard"]
    with pytest.raises(ValueError, match=r"read 16 tokens per step, this run reads 32"):
        data.DistributedTokenLoader(tmp_path, "train", 2, 4, world_size=4).load_state_dict(state)
    with pytest.raises(RuntimeError, match="between optimizer steps"):
        accumulating = data.DistributedTokenLoader(tmp_path, "train", 2, 4, grad_accum=2)
        accumulating.next_batch()
        accumulating.state_dict()


def steps_of_windows(loaders, steps: int, grad_accum: int) -> list[set]:
    """For each optimizer step, the set of (B, T+1) windows all ranks read, as tuples."""
    out = []
    for _ in range(steps):
        seen = set()
        for _ in range(grad_accum):
            for loader in loaders:
                seen.add(tuple(loader.next_window().flatten().tolist()))
        out.append(seen)
    return out


def test_elastic_resume_reads_the_same_windows_on_another_world_size(tmp_path):
    """2 -> 1 -> 2 processes at the same tokens per step (grad_accum 1 -> 2 -> 1): every optimizer step reads the
    windows an uninterrupted 2-process run reads, across shard ends, with nothing repeated or skipped."""
    write_split(tmp_path, [103, 77, 10, 50])
    B, T = 2, 4

    def world(W, state=None):
        loaders = [data.DistributedTokenLoader(tmp_path, "train", B, T, rank=r, world_size=W, grad_accum=2 // W)
                   for r in range(W)]
        for loader in loaders:
            if state:
                loader.load_state_dict(state)
        return loaders

    straight = steps_of_windows(world(2), 12, 1)
    two = world(2)
    first = steps_of_windows(two, 4, 1)
    one = world(1, two[0].state_dict())
    middle = steps_of_windows(one, 5, 2)
    again = world(2, one[0].state_dict())
    last = steps_of_windows(again, 3, 1)
    assert first + middle + last == straight
    assert all(len(step) == 2 for step in straight)  # two distinct windows per step


def test_bad_shards_are_named(tmp_path):
    write_split(tmp_path, [60, 60])
    bad = np.load(tmp_path / "s_train_000001.npy")
    bad[5] = 60_000
    np.save(tmp_path / "s_train_000001.npy", bad)
    loader = data.DistributedTokenLoader(tmp_path, "train", 2, 4)  # shard 1 is checked when first opened
    loader.next_batch()
    with pytest.raises(ValueError, match=r"s_train_000001.npy: token id 60000 is not below vocab_size 50257"):
        for _ in range(10):
            loader.next_batch()
    np.save(tmp_path / "s_train_000000.npy", np.zeros(60, dtype=np.int32))
    with pytest.raises(ValueError, match=r"s_train_000000.npy: expected a 1-D uint16 array, found a 1-D int32"):
        data.DistributedTokenLoader(tmp_path, "train", 2, 4)
    with pytest.raises(ValueError, match="token id 60000"):
        data.load_shard(tmp_path / "s_train_000001.npy", vocab_size=50257)
    assert data.load_shard(tmp_path / "s_train_000001.npy").dtype == np.uint16


def test_a_split_too_small_or_missing_is_an_error(tmp_path):
    write_split(tmp_path, [16, 12])
    with pytest.raises(ValueError, match=r"grad_accum=1 needs 17 tokens.*largest has 16"):
        data.DistributedTokenLoader(tmp_path, "train", 2, 4, world_size=2)
    with pytest.raises(ValueError, match="no 'val' shards"):
        data.DistributedTokenLoader(tmp_path, "val", 1, 4)
    with pytest.raises(ValueError, match="rank 2"):
        data.DistributedTokenLoader(tmp_path, "train", 1, 4, rank=2, world_size=2)


# ------------------------------------------------------------------------------------------------------------------
# the embedded corpus and the command line


def test_embedded_corpus_is_english_and_prepares_itself(tmp_path):
    assert (data.embedded_corpus_path().parent / "ATTRIBUTION.txt").read_text().count("CC BY 2.5") >= 1
    docs = list(data.iter_embedded_documents())
    assert len(docs) == 24 and docs[0].startswith("HAMLET, PRINCE OF DENMARK")
    words = " ".join(docs).lower().split()
    assert words.count("the") > 10_000 and "gutenberg" not in words
    (tmp_path / "shakespeare_train_000003.npy.tmp").write_bytes(b"left by a killed run")
    manifest = data.ensure_embedded_shards(tmp_path, num_proc=2, progress=False)
    assert not (tmp_path / "shakespeare_train_000003.npy.tmp").exists()
    total = sum(manifest["tokens"].values())
    print(f"embedded corpus: {len(docs)} documents, {total:,} tokens")
    assert 900_000 < total < 1_100_000 and manifest["tokens"]["val"] == data.EMBEDDED_VAL_TOKENS
    assert sum(s["split"] == "train" for s in manifest["shards"]) >= 2
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    assert data.ensure_embedded_shards(tmp_path) == manifest  # prepared once, then only read
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == stamp
    x, y = data.DistributedTokenLoader(tmp_path, "val", 4, 64).next_batch()
    assert x[0, 0] == EOT_ID and get_encoding().decode(x[0].tolist()).startswith("<|endoftext|>HAMLET")



def test_cli_writes_shards_and_reports_errors_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "--out_dir" in capsys.readouterr().out
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in DOCS) + "\n")
    argv = [
        "--out_dir",
        str(tmp_path / "out"),
        "--input",
        str(tmp_path / "a.jsonl"),
        "--shard_size",
        "500",
        "--val_tokens",
        "100",
        "--num_proc",
        "1",
    ]
    assert cli.main(argv) == 0
    manifest = data.read_manifest(tmp_path / "out")
    assert manifest["source"]["type"] == "files" and manifest["shards"][1]["file"] == "local_train_000000.npy"
    assert "documents" in capsys.readouterr().out
    assert cli.main(argv) == 0  # the same command on a finished dataset: a no-op
    assert capsys.readouterr().out.startswith("already prepared: ")
    assert cli.main(argv[:-4] + ["--val_tokens", "50", "--num_proc", "1"]) == 2  # another command
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--overwrite" in err
    assert cli.main(argv + ["--overwrite"]) == 0


@pytest.mark.slow
def test_cli_process_exits_nonzero_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [
        sys.executable,
        "-m", "minigpt_hf", "prepare-data",
        "--out_dir",
        str(tmp_path),
        "--input",
        str(tmp_path / "missing.jsonl"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: input {tmp_path / 'missing.jsonl'} does not exist"]
