"""The ``gpt2-124m`` preset itself, rehearsed on the CPU: the notes' model at its true shape (12 x 12 x 768, T = 1024,
vocabulary 50304) trains 2 optimizer steps on the embedded corpus, saves (about 1.5 GB a checkpoint with the AdamW
moments), resumes exactly, loads with AutoModelForCausalLM, and ``eval-hellaswag`` and ``generate`` run on it.

Only the batch is small (B = 1, one 1024-token row per step) and the precision fp32: everything else is the preset's.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers import ROOT
from minigpt_hf import checkpoint as ckpt
from minigpt_hf.commands import eval_hellaswag, generate

PARAMETERS = 124_475_904  # the notes' 124.47M: 124,354,560 decayed + 121,344 not, the LM head tied to wte
PEAK_RSS_LIMIT = 6 * 2**30  # a run of B=1, T=1024 peaks at about 3.6 GB (weights, grads, AdamW, one save)


def train_124m(data_dir, out, *extra) -> tuple[str, int, float]:
    """``minigpt train --config gpt2-124m`` in a process of its own: (its stdout, its peak RSS in bytes, seconds)."""
    argv = [sys.executable, "-m", "minigpt_hf", "train", "--config", "gpt2-124m", "--data_source", "embedded",
            "--data_dir", str(data_dir), "--micro_batch_size", "1", "--total_batch_size", "1024", "--max_steps", "2",
            "--mixed_precision", "no", "--compile", "False", "--eval_every", "1000", "--eval_steps", "1",
            "--sample_every", "1000", "--num_samples", "1",
            "--sample_max_length", "12", "--save_every", "1", "--keep_last", "0", "--output_dir", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    out.mkdir(parents=True)
    start, deadline = time.monotonic(), time.monotonic() + 900
    with open(out / "stdout.txt", "w+") as stdout, open(out / "stderr.txt", "w+") as stderr:
        pid = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr).pid
        while True:  # os.wait4 gives this child's own peak RSS (ru_maxrss, KiB on Linux)
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            if waited or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not waited:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        stdout.seek(0), stderr.seek(0)
        assert waited and os.waitstatus_to_exitcode(status) == 0, stderr.read()[-4000:]
        return stdout.read(), usage.ru_maxrss * 1024, time.monotonic() - start


@pytest.fixture(scope="module")
def runs(shakespeare, tmp_path_factory):
    """A straight 2-step run (checkpoints at 1 and 2), and a second run resumed from the first's step 1; deleted
    afterwards (4.5 GB)."""
    root = tmp_path_factory.mktemp("gpt2_124m")
    straight, resumed = root / "straight", root / "resumed"
    first = train_124m(shakespeare, straight)
    second = train_124m(shakespeare, resumed, "--resume_from_checkpoint", str(ckpt.checkpoint_path(straight, 1)))
    yield straight, resumed, first, second
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_the_preset_at_its_true_shape_trains_and_saves_a_loadable_124m_model(runs):
    from transformers import AutoModelForCausalLM

    straight, _, (_, rss, seconds), _ = runs
    log = (straight / "log.txt").read_text()
    assert f"model gpt2-124m | {PARAMETERS:,} parameters" in log
    assert "total_batch_size 1,024 = B 1 x T 1024 x world_size 1 x grad_accum 1 | max_steps 2" in log
    assert [step for step, _ in ckpt.list_checkpoints(straight)] == [1, 2]
    checkpoint = ckpt.checkpoint_path(straight, 2)
    shape = ckpt.read_trainer_state(checkpoint)["model_config"]
    assert (shape["n_layer"], shape["n_head"], shape["n_embd"], shape["block_size"], shape["vocab_size"]) == (
        12, 12, 768, 1024, 50304)
    assert (checkpoint / "training_state" / "optimizer.bin").stat().st_size > 2 * 4 * PARAMETERS  # AdamW's moments

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert type(model).__name__ == "MiniGPTForCausalLM" and model.num_parameters() == PARAMETERS
    decayed, plain = model.optimizer_groups()
    assert [(len(g["params"]), sum(p.numel() for p in g["params"])) for g in (decayed, plain)] == [
        (50, 124_354_560), (98, 121_344)]  # the notes' parameter table
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in saved.items())
    assert rss < PEAK_RSS_LIMIT, f"peak RSS {rss / 2**30:.2f} GiB"
    print(f"\ngpt2-124m, 2 steps of B=1 x T=1024 with 2 saves: {seconds:.0f} s, peak RSS {rss / 2**30:.2f} GiB")


@pytest.mark.slow
def test_the_preset_resumes_exactly(runs):
    straight, resumed, _, (_, rss, seconds) = runs
    assert f"resumed from {ckpt.checkpoint_path(straight, 1)} at step 1" in (resumed / "log.txt").read_text()
    a, b = (load_file(str(ckpt.checkpoint_path(out, 2) / "model.safetensors")) for out in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    states = [ckpt.read_trainer_state(ckpt.checkpoint_path(out, 2)) for out in (straight, resumed)]
    assert states[0]["loader_state"] == states[1]["loader_state"]
    print(f"\ngpt2-124m resumed for 1 step: {seconds:.0f} s, peak RSS {rss / 2**30:.2f} GiB")


@pytest.mark.slow
def test_hellaswag_and_generate_run_on_the_124m_checkpoint(runs, tmp_path, capsys):
    straight = runs[0]
    checkpoint = ckpt.checkpoint_path(straight, 2)
    rows = [{"ctx": f"Example {i}: the cook opens the", "label": i % 4,
             "endings": [" oven and", " door of the car", " book to read", " window, and the wind"]} for i in range(6)]
    data = tmp_path / "hellaswag.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = tmp_path / "hellaswag.json"
    assert eval_hellaswag.main(["--model", str(checkpoint), "--data", str(data), "--limit", "4", "--device", "cpu",
                                "--output", str(result)]) == 0
    metrics = json.loads(result.read_text())
    assert metrics["n"] == 4 and 0 <= metrics["acc"] <= 1 and 0 <= metrics["acc_norm"] <= 1
    capsys.readouterr()
    assert generate.main([str(checkpoint), "--num_samples", "1", "--max_new_tokens", "8", "--device", "cpu"]) == 0
    samples = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sample 0: ")]
    assert len(samples) == 1 and samples[0].startswith("sample 0: Hello, I'm a language model,")
