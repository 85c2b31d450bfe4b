"""Nothing silently wrong in a data folder (issue 18, data side): every shard's sha256 in the manifest, computed
while it is written; the loader, eval-loss and verify_dataset check it; a full disk while preparing is one line
naming the file, and the run resumes once there is space."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import errno
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minigpt_hf import data
from minigpt_hf.commands import prepare_data as cli

DOCS = [f"Document {i}: " + "the quality of mercy is not strained, it droppeth. " * (i % 9 + 2) for i in range(300)]


def prepare(out, **kwargs):
    kwargs = {"prefix": "t", "shard_size": 2000, "val_tokens": 1000, "progress": False, "source": {"docs": "test"},
              **kwargs}
    return data.prepare_shards(DOCS, out, **kwargs)


def test_the_manifest_has_every_shards_sha256_computed_while_writing(tmp_path, monkeypatch):
    opened = []
    real_open = open

    def spy(path, mode="r", *args, **kwargs):
        opened.append((Path(path).name, mode))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(data, "open", spy, raising=False)  # data.py's own open()
    monkeypatch.setattr(data, "file_sha256", lambda path: pytest.fail(f"{path} was read back to hash it"))
    manifest = prepare(tmp_path)
    assert len(manifest["shards"]) > 3 and all(mode == "wb" for _, mode in opened)
    assert len(opened) == len(manifest["shards"])  # one write per shard, nothing read
    for s in manifest["shards"]:
        assert s["sha256"] == hashlib.sha256((tmp_path / s["file"]).read_bytes()).hexdigest()
        with real_open(tmp_path / s["file"], "rb") as f:  # exactly what np.save writes
            assert f.read() == _npy_bytes(np.load(tmp_path / s["file"]))
    assert manifest["format_version"] == 2 and manifest["prefix"] == "t"


def _npy_bytes(array):
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def rewrite_with_other_ids(path):
    """The same size and dtype, other valid token ids: only a content hash can tell."""
    tokens = np.load(path)
    np.save(path, ((tokens.astype(np.int64) + 1) % 50000).astype(np.uint16))


def test_the_loader_refuses_a_shard_whose_contents_changed(tmp_path):
    manifest = prepare(tmp_path)
    loader = data.DistributedTokenLoader(tmp_path, "train", 2, 16)
    rewrite_with_other_ids(tmp_path / manifest["shards"][2]["file"])  # the second train shard, not yet opened
    with pytest.raises(ValueError) as e:
        for _ in range(200):
            loader.next_batch()
    message = str(e.value)
    assert message.startswith(f"shard {tmp_path / manifest['shards'][2]['file']}: sha256 ")
    assert "differs from the manifest's" in message and f"minigpt verify {tmp_path}" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="sha256"):  # and at once when it is the first shard
        data.DistributedTokenLoader(tmp_path, "val", 1, 16)
        rewrite_with_other_ids(tmp_path / manifest["shards"][0]["file"])
        data.DistributedTokenLoader(tmp_path, "val", 1, 16)


def test_verify_dataset_names_every_problem_in_one_line_each(tmp_path):
    manifest = prepare(tmp_path)
    assert data.verify_dataset(tmp_path) == []
    shards = [tmp_path / s["file"] for s in manifest["shards"]]
    rewrite_with_other_ids(shards[1])
    with open(shards[2], "r+b") as f:
        f.truncate(shards[2].stat().st_size - 10)
    shards[3].unlink()
    problems = data.verify_dataset(tmp_path)
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert problems[0].startswith(f"shard {shards[1]}: sha256") and "differs" in problems[0]
    assert problems[1].startswith(f"shard {shards[2]} is not a whole .npy token array")
    assert problems[2] == f"shard {shards[3]} is missing"
    # counts that do not add up, a damaged manifest, none at all
    listed = json.loads((tmp_path / "manifest.json").read_text())
    listed["tokens"]["val"] += 5
    (tmp_path / "manifest.json").write_text(json.dumps(listed))
    assert any(p == f"{tmp_path / 'manifest.json'}: the val split is said to hold 1,005 tokens but its shards list "
                    "1,000" for p in data.verify_dataset(tmp_path))
    (tmp_path / "manifest.json").write_text("{ damaged")
    assert data.verify_dataset(tmp_path) == [f"{tmp_path / 'manifest.json'} is damaged; prepare the data again "
                                             "(minigpt prepare-data --overwrite)"]
    (tmp_path / "manifest.json").unlink()
    assert data.verify_dataset(tmp_path)[0].startswith(f"no manifest.json in {tmp_path}")


def test_verify_dataset_reports_a_manifest_without_hashes(tmp_path):
    manifest = prepare(tmp_path)
    for s in manifest["shards"]:
        del s["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    problems = data.verify_dataset(tmp_path)
    assert len(problems) == len(manifest["shards"]) and all("records no sha256" in p for p in problems)
    data.DistributedTokenLoader(tmp_path, "train", 2, 16).next_batch()  # older datasets still train


def test_eval_loss_does_not_trust_a_wrong_val_count(tmp_path, capsys):
    from minigpt_hf.commands import eval_loss
    from minigpt_hf.evaluation import load_tokens

    manifest = prepare(tmp_path)
    assert len(load_tokens(tmp_path, "val")) == 1000
    wrong = json.loads(json.dumps(manifest))
    wrong["tokens"]["val"] = 1200
    (tmp_path / "manifest.json").write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match="the val split is said to hold 1,200 tokens but its shards list 1,000"):
        load_tokens(tmp_path, "val")
    (tmp_path / "model").mkdir()  # the data is checked before any model is loaded
    assert eval_loss.main(["--model", str(tmp_path / "model"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "said to hold 1,200 tokens" in err
    wrong["tokens"]["val"], wrong["shards"][0]["tokens"] = 1200, 1200  # both agree, the shard does not
    (tmp_path / "manifest.json").write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match=r"has 1,000 tokens, the manifest says 1,200"):
        load_tokens(tmp_path, "val")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    rewrite_with_other_ids(tmp_path / manifest["shards"][0]["file"])
    with pytest.raises(ValueError, match="sha256"):
        load_tokens(tmp_path, "val", max_tokens=10)


# ----------------------------------------------------------------------------------------------------------------------
# a full disk while preparing: one line naming the file, exit 2, and a resume once there is space


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured
    return captured.err.strip()


@pytest.fixture
def tmpfs(tmp_path):
    """A 3 MB tmpfs mounted at tmp_path/mnt (root only), unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"mounting a tmpfs is not permitted here ({err}); "
                    "test_disk_full_messages_without_a_mount covers the messages by monkeypatching")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


ARGS = ["--input", "{docs}", "--shard_size", "20000", "--val_tokens", "10000", "--num_proc", "1"]


@pytest.mark.parametrize("target", ["shard", "journal", "manifest"])
def test_disk_full_on_a_real_tmpfs_is_one_line_and_the_run_resumes(target, tmpfs, tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS * 3))
    args = [a.format(docs=docs) for a in ARGS]
    assert cli.main(["--out_dir", str(tmp_path / "ref"), *args]) == 0
    out = tmpfs / "data"
    write_shard, write_json, filled = data._write_shard, data._write_json, []

    def shard_then_full(path, tokens, tag):  # the third shard meets a full disk
        if target == "shard" and path.name == "local_train_000001.npy" and not filled:
            filled.append(fill(tmpfs))
        return write_shard(path, tokens, tag)

    def json_then_full(path, value):
        if not filled and ((target == "journal" and len(value.get("shards", [])) == 2)
                           or (target == "manifest" and path.name == data.MANIFEST_NAME)):
            filled.append(fill(tmpfs))
        return write_json(path, value)

    monkeypatch.setattr(data, "_write_shard", shard_then_full)
    monkeypatch.setattr(data, "_write_json", json_then_full)
    capsys.readouterr()
    assert cli.main(["--out_dir", str(out), *args]) == 2
    line = one_error_line(capsys)
    name = {"shard": "local_train_000001.npy", "journal": data.JOURNAL_NAME, "manifest": data.MANIFEST_NAME}[target]
    assert line == (f"error: cannot write {out / name}: No space left on device; free some disk space (or choose "
                    "another --out_dir), then run the same command again: it resumes after the last finished shard")
    assert not (out / data.MANIFEST_NAME).exists() and not list(out.glob(".*.tmp-*"))
    filled[0].unlink()
    assert cli.main(["--out_dir", str(out), *args]) == 0
    assert capsys.readouterr().out.startswith(f"resuming {out}: ")
    ref = {p.name: p.read_bytes() for p in (tmp_path / "ref").glob("*.npy")}
    assert {p.name: p.read_bytes() for p in out.glob("*.npy")} == ref and data.verify_dataset(out) == []


def test_disk_full_messages_without_a_mount(tmp_path, monkeypatch, capsys):
    """The same lines when the kernel's ENOSPC is simulated: shard (the write), journal and manifest (the rename)."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS * 3))
    args = [a.format(docs=docs) for a in ARGS]
    real_open, real_atomic = open, data.write_text_atomic

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, chunk):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    for target, name in (("shard", "local_val_000000.npy"), ("journal", data.JOURNAL_NAME),
                         ("manifest", data.MANIFEST_NAME)):
        out = tmp_path / target
        monkeypatch.setattr(data, "open", (lambda p, m="r", *a, **k: FullFile(real_open(p, m, *a, **k)) if "w" in m
                                           else real_open(p, m, *a, **k)) if target == "shard" else real_open,
                            raising=False)
        monkeypatch.setattr(data, "write_text_atomic", (lambda p, text, name=name: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p) + ".tmp-x")) if Path(p).name == name
            else real_atomic(p, text)))
        assert cli.main(["--out_dir", str(out), *args]) == 2
        assert one_error_line(capsys).startswith(f"error: cannot write {out / name}: No space left on device; free ")
        monkeypatch.undo()
        assert cli.main(["--out_dir", str(out), *args]) == 0
        capsys.readouterr()
        assert data.verify_dataset(out) == []
    shutil.rmtree(tmp_path / "shard")
