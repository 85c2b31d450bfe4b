"""FSDP2 for real: 2 CPU processes over gloo through ``accelerate launch --config_file accelerate_configs/fsdp_cpu.yaml``
train the small model sharded per Block, save a full ``model.safetensors`` beside Accelerate's sharded optimizer,
and resume exactly (the same losses and bit-identical weights as the straight run), also elastically on 1 process.
A non-FSDP run refuses an FSDP checkpoint with one line.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import ROOT, free_port, launch_env
from minigpt_hf.checkpoint import read_scalars
from minigpt_hf.commands import train as train_command
from minigpt_hf.data import DistributedTokenLoader

SMALL = ["--preset", "tiny", "--n_layer", "2", "--n_embd", "64", "--block_size", "64"]
FSDP_CPU = ROOT / "accelerate_configs" / "fsdp_cpu.yaml"


@pytest.fixture(scope="module")
def data_dir(shakespeare):
    return shakespeare


def run_args(data_dir, out, *extra):
    """4 steps with dropout (the RNG matters), B=4 x T=32 x 2 processes x 2 micro-steps, checkpoints at 2 and 4."""
    return [*SMALL, "--data_dir", str(data_dir), "--micro_batch_size", "4", "--seq_len", "32",
            "--total_batch_size", "512", "--max_steps", "4", "--warmup_steps", "1", "--max_lr", "1e-3",
            "--min_lr", "1e-4", "--mixed_precision", "no", "--eval_every", "2", "--eval_steps", "2",
            "--sample_every", "4", "--sample_max_length", "12", "--num_samples", "1", "--save_every", "2",
            "--dropout", "0.1", "--keep_last", "0", "--output_dir", str(out), *extra]


def launch_fsdp(argv, num_processes=2) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file accelerate_configs/fsdp_cpu.yaml -m minigpt_hf train`` (ACCELERATE_USE_CPU=1)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CPU),
           "--num_processes", str(num_processes), "--main_process_port", str(free_port()),
           "-m", "minigpt_hf", "train", *map(str, argv)]
    proc = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def scalars(out, tag) -> dict:
    steps, values = read_scalars(Path(out) / "tensorboard")[tag]
    return dict(zip(steps.tolist(), values.tolist()))


def weights(out, step):
    return load_file(str(Path(out) / "checkpoints" / f"step_{step:06d}" / "model.safetensors"))


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_straight")
    launch_fsdp(run_args(data_dir, out))
    return out


@pytest.mark.slow
def test_fsdp_trains_on_two_processes_and_saves_a_full_model(straight, data_dir):
    log = (straight / "log.txt").read_text()
    assert "world_size 2 | device cpu" in log and "distributed FSDP" in log  # not DDP, not one process
    checkpoint = straight / "checkpoints" / "step_000004"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["grad_accum_steps"] == 2
    training_state = checkpoint / "training_state"
    # Accelerate's FSDP save: the model and optimizer as torch.distributed.checkpoint shards, one file per rank
    for folder in ("optimizer_0", "pytorch_model_fsdp_0"):
        assert sorted(p.name for p in (training_state / folder).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (training_state / "optimizer.bin").exists()

    from transformers import AutoModelForCausalLM

    saved = weights(straight, 4)
    assert "lm_head.weight" not in saved  # tied to wte: stored once, as a DDP or single-process run stores it
    assert not any(".distcp" in p.name or "pytorch_model" in p.name for p in checkpoint.iterdir())
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()  # full, unsharded weights in model.safetensors
    assert type(model).__name__ == "MiniGPTForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    # the loaded model scores the validation batches of both ranks as the FSDP run logged at step 4
    losses = []
    with torch.no_grad():
        for rank in range(2):
            loader = DistributedTokenLoader(data_dir, "val", 4, 32, rank, 2)
            loader.reset()
            for _ in range(2):
                x, y = loader.next_batch()
                losses.append(model(x, shift_labels=y).loss)
    assert torch.stack(losses).mean().item() == pytest.approx(scalars(straight, "val/loss")[4], abs=1e-5)


@pytest.mark.slow
def test_fsdp_resume_is_exact(straight, data_dir, tmp_path):
    resumed = tmp_path / "resumed"
    launch_fsdp(run_args(data_dir, resumed, "--resume_from_checkpoint", straight / "checkpoints" / "step_000002"))
    log = (resumed / "log.txt").read_text()
    assert "distributed FSDP" in log and "resumed from" in log and "elastic" not in log
    again, before = scalars(resumed, "train/loss"), scalars(straight, "train/loss")
    assert sorted(again) == [2, 3]
    assert {step: before[step] for step in again} == again  # bit-identical float32 losses
    assert scalars(resumed, "val/loss")[4] == scalars(straight, "val/loss")[4]
    a, b = weights(straight, 4), weights(resumed, 4)
    assert sorted(a) == sorted(b) and all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.slow
def test_fsdp_elastic_resume_on_one_process(straight, data_dir, tmp_path):
    """torch.distributed.checkpoint reshards the saved optimizer (and model) shards for another process count."""
    one = tmp_path / "one"
    launch_fsdp(run_args(data_dir, one, "--resume_from_checkpoint", straight / "checkpoints" / "step_000002"),
                num_processes=1)
    log = (one / "log.txt").read_text()
    assert "world_size 1" in log and "distributed FSDP" in log and "elastic resume: 2 -> 1 processes" in log
    assert sorted(scalars(one, "train/loss")) == [2, 3]
    assert (one / "checkpoints" / "step_000004" / "COMPLETE").is_file()


@pytest.mark.slow
def test_fsdp_checkpoint_is_refused_without_fsdp(straight, data_dir, tmp_path, capsys):
    argv = run_args(data_dir, tmp_path / "plain", "--resume_from_checkpoint", straight / "checkpoints" / "step_000002")
    assert train_command.main([str(a) for a in argv]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert "was saved by a run with FSDP" in errors[0] and "launched without FSDP" in errors[0]
