"""Validation loss: shard loading and its errors, agreement with a direct computation, CLI, and 2 processes."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from helpers import launch_two
from minigpt_hf.commands import eval_loss as script
from minigpt_hf.evaluation import context_length, evaluate_loss, load_tokens



def tiny_model(n_positions=32):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=n_positions)).eval()


def random_tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, 50257, size=n, dtype=np.uint16)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    np.save(path / "shake_val_000000.npy", random_tokens(150, seed=1))
    np.save(path / "shake_val_000001.npy", random_tokens(150, seed=2))
    np.save(path / "shake_train_000000.npy", random_tokens(500, seed=3))
    shards = [{"file": f"shake_{split}_{i:06d}.npy", "split": split, "tokens": n}
              for split, i, n in (("val", 0, 150), ("val", 1, 150), ("train", 0, 500))]
    (path / "manifest.json").write_text(json.dumps({"shards": shards, "tokens": {"val": 300, "train": 500}}))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(path)
    return path


def test_load_tokens_folder_split_and_limit(data_dir):
    val = load_tokens(data_dir, "val")
    expected = np.concatenate([np.load(data_dir / "shake_val_000000.npy"), np.load(data_dir / "shake_val_000001.npy")])
    np.testing.assert_array_equal(val, expected)
    np.testing.assert_array_equal(load_tokens(data_dir, "val", max_tokens=200), expected[:200])
    np.testing.assert_array_equal(load_tokens(data_dir / "shake_train_000000.npy", max_tokens=10),
                                  np.load(data_dir / "shake_train_000000.npy")[:10])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p, np.arange(10, dtype=np.int32)), "expected a 1-D uint16 array, found a 1-D int32"),
        (lambda p: np.save(p, np.zeros((2, 5), dtype=np.uint16)), "found a 2-D uint16"),
        (lambda p: p.write_text("not numpy"), "not a whole .npy token array"),
        (lambda p: None, "no such token shard"),
    ],
)
def test_bad_shards_are_clear(tmp_path, make, message):
    path = tmp_path / "x_val_000000.npy"
    make(path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_tokens(path)


def test_folder_without_split_is_clear(data_dir):
    with pytest.raises(ValueError, match="no 'test' shards"):
        load_tokens(data_dir, "test")


def test_matches_direct_computation():
    model, tokens, seq_len = tiny_model(), random_tokens(200), 16
    result = evaluate_loss(model, tokens, seq_len=seq_len, batch_size=5, progress=False)
    n_windows = (len(tokens) - 1) // seq_len
    with torch.no_grad():  # HF's own shifted loss over each (T + 1)-token window: T predictions per window
        direct = [model(input_ids=w, labels=w).loss.item() for w in
                  (torch.tensor(tokens[i * seq_len : (i + 1) * seq_len + 1], dtype=torch.long)[None]
                   for i in range(n_windows))]
    assert result["n_windows"] == n_windows and result["n_tokens"] == n_windows * seq_len
    assert result["loss"] == pytest.approx(np.mean(direct), abs=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))


def test_seq_len_is_capped_by_model_positions():
    model = tiny_model(n_positions=32)
    assert context_length(model) == 32 and context_length(model, 1000) == 32 and context_length(model, 8) == 8
    assert evaluate_loss(model, random_tokens(100), seq_len=1000, progress=False)["seq_len"] == 32


def test_too_few_tokens_and_bad_ids_are_clear():
    model = tiny_model(n_positions=32)
    with pytest.raises(ValueError, match="at least 33 tokens"):
        evaluate_loss(model, random_tokens(20), progress=False)
    with pytest.raises(ValueError, match="vocab_size"):
        evaluate_loss(model, np.full(100, 60000, dtype=np.uint16), progress=False)


def test_cli_writes_json_and_errors_are_one_line(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "loss.json"
    assert script.main(["--model", str(model_dir), "--data", str(data_dir), "--max_tokens", "250",
                        "--seq_len", "16", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert (result["n_windows"], result["seq_len"], result["num_processes"]) == (15, 16, 1)
    assert script.main(["--model", str(model_dir), "--data", str(tmp_path / "missing.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.npy" in err
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0



@pytest.mark.slow
def test_two_processes_match_one(model_dir, data_dir, tmp_path):
    args = ["--model", str(model_dir), "--data", str(data_dir), "--seq_len", "16", "--batch_size", "3"]
    proc = launch_two("eval-loss", [*args, "--output", tmp_path / "two.json"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["num_processes"] == 2
    assert script.main([*args, "--output", str(tmp_path / "one.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert (two["n_tokens"], two["n_windows"]) == (one["n_tokens"], one["n_windows"]) == (288, 18)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)
