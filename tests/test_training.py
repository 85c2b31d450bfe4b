"""The trainer: arguments, LR schedule, batch arithmetic, MFU, fp16 loss scaling on CPU, gradient accumulation,
checkpoints (layout, keep-last-K, no overwrite, refusals) and, with 2 real processes, DDP training and exact resume.

In-process runs call ``minigpt train``'s ``main`` on a 2-layer, 64-wide model (T=32); the 2-process runs go
through ``accelerate launch`` as a user would.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from safetensors.torch import load_file

from helpers import ROOT, launch_two
from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM
from minigpt_hf.checkpoint import list_checkpoints
from minigpt_hf.commands import train as train_script
from minigpt_hf.data import DistributedTokenLoader
from minigpt_hf import training
from minigpt_hf.training import enable_cpu_fp16, flops_per_token, get_lr, grad_accum_steps, parse_args, peak_flops_per_device

SMALL_MODEL = ["--preset", "tiny", "--n_layer", "2", "--n_embd", "64", "--block_size", "64"]


def small_run(data_dir, output_dir, *extra):
    """Flags of a short run of the small model: B=4, T=32, 256 tokens per step, evaluation and samples cheap."""
    return [*SMALL_MODEL, "--data_dir", str(data_dir), "--micro_batch_size", "4", "--seq_len", "32",
            "--total_batch_size", "256", "--max_steps", "4", "--warmup_steps", "1", "--max_lr", "1e-3",
            "--min_lr", "1e-4", "--mixed_precision", "no", "--eval_every", "2", "--eval_steps", "2",
            "--sample_every", "4", "--sample_max_length", "16", "--save_every", "2", "--output_dir", str(output_dir),
            *extra]


def scalars(output_dir, tag):
    """{step: value} of one TensorBoard scalar of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(output_dir) / "tensorboard"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def weights(checkpoint):
    return load_file(str(Path(checkpoint) / "model.safetensors"))


def run_error(argv, capsys):
    """Run the trainer in-process; return its stderr, checking it failed with one line and no traceback."""
    assert train_script.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------------------------------------------------
# pure functions


def test_lr_schedule_warmup_peak_cosine_min():
    max_lr, min_lr, warmup, max_steps = 6e-4, 6e-5, 10, 100
    lrs = [get_lr(step, max_lr, min_lr, warmup, max_steps) for step in range(max_steps)]
    assert lrs[0] == pytest.approx(max_lr / warmup)  # warmup starts above zero
    assert lrs[warmup - 1] == pytest.approx(max_lr) and lrs[warmup] == pytest.approx(max_lr)
    assert all(a <= b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))
    assert lrs[-1] == min_lr  # the last step runs at min_lr
    midpoint = warmup + (max_steps - 1 - warmup) // 2
    assert lrs[midpoint] == pytest.approx((max_lr + min_lr) / 2, rel=0.02)


def test_warmup_ratio_and_steps():
    _, _, train_args = parse_args(["--max_steps", "953"])
    assert train_args.num_warmup_steps() == 36  # 3.75% of 953
    _, _, train_args = parse_args(["--max_steps", "953", "--warmup_steps", "100"])
    assert train_args.num_warmup_steps() == 100


def test_grad_accum_steps():
    assert grad_accum_steps(524_288, 8, 1024, 1) == 64  # the notes' Colab run
    assert grad_accum_steps(524_288, 64, 1024, 8) == 1  # build-nanogpt's 8 x H100
    with pytest.raises(ValueError, match="not a multiple of micro_batch_size"):
        grad_accum_steps(500_000, 8, 1024, 1)


def test_flops_per_token_gpt2_124m():
    with torch.device("meta"):
        model = MiniGPTForCausalLM(MiniGPTConfig.from_preset("gpt2-124m"))
    n = 124_475_904 - 1024 * 768  # all parameters (tied head once) but the position embedding
    assert flops_per_token(model, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_peak_flops_lookup(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert peak_flops_per_device(torch.device("cuda")) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert peak_flops_per_device(torch.device("cuda")) == 65e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce GTX 1080")
    assert peak_flops_per_device(torch.device("cuda")) is None
    assert peak_flops_per_device(torch.device("cpu")) is None  # on CPU only with --peak_flops
    assert peak_flops_per_device(torch.device("cpu"), 1e12) == 1e12


# ----------------------------------------------------------------------------------------------------------------------
# arguments and presets


def test_defaults_are_the_notes_recipe():
    model_args, data_args, train_args = parse_args([])
    assert model_args.preset == "gpt2-124m"
    assert (train_args.total_batch_size, train_args.max_steps, train_args.max_lr, train_args.min_lr) == (
        524_288, 953, 6e-4, 6e-5)
    assert (train_args.adam_beta1, train_args.adam_beta2, train_args.adam_epsilon) == (0.9, 0.95, 1e-8)
    assert (train_args.weight_decay, train_args.grad_clip) == (0.1, 1.0)
    assert (train_args.num_samples, train_args.sample_max_length, train_args.sample_top_k) == (4, 32, 50)


def test_config_file_and_flags_flags_win(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("preset: tiny\nmax_steps: 7\nmax_lr: 3.0e-3\nmixed_precision: \"no\"\ncompile: true\n")
    model_args, _, train_args = parse_args(["--config", str(config), "--max_steps", "9"])
    assert (model_args.preset, train_args.max_steps, train_args.max_lr) == ("tiny", 9, 3e-3)
    assert train_args.mixed_precision == "no" and train_args.compile is True


@pytest.mark.parametrize("bad, match", [
    ("bogus_key: 1\n", "unknown key bogus_key"),
    ("mixed_precision: no\n", "quote"),  # YAML reads a bare no as false
])
def test_config_file_errors(tmp_path, bad, match):
    config = tmp_path / "bad.yaml"
    config.write_text(bad)
    with pytest.raises(ValueError, match=match):
        parse_args(["--config", str(config)])


@pytest.mark.parametrize("name, world_size, accum, tokens", [
    ("gpt2-124m", 8, 1, 524_288), ("gpt2-124m", 1, 8, 524_288), ("colab-t4", 1, 64, 524_288), ("tiny", 1, 1, 256),
])
def test_presets(name, world_size, accum, tokens):
    model_args, data_args, train_args = parse_args(["--config", str(ROOT / "configs" / f"{name}.yaml")])
    assert train_args.total_batch_size == tokens
    assert grad_accum_steps(tokens, data_args.micro_batch_size, data_args.seq_len, world_size) == accum
    assert data_args.seq_len <= MiniGPTConfig.from_preset(model_args.preset).block_size


def test_colab_and_gpt2_presets_follow_the_notes():
    _, data_args, colab = parse_args(["--config", str(ROOT / "configs" / "colab-t4.yaml")])
    assert (data_args.micro_batch_size, data_args.seq_len, colab.mixed_precision) == (8, 1024, "fp16")
    assert (colab.max_steps, colab.num_warmup_steps()) == (953, 100)
    _, data_args, full = parse_args(["--config", str(ROOT / "configs" / "gpt2-124m.yaml")])
    assert (data_args.micro_batch_size, full.mixed_precision, full.warmup_ratio) == (64, "bf16", 0.0375)


# ----------------------------------------------------------------------------------------------------------------------
# bad input: one line, exit status 1


def test_unknown_preset(tmp_path, capsys):
    assert "unknown preset 'gpt5'" in run_error(["--preset", "gpt5", "--output_dir", str(tmp_path)], capsys)


def test_total_batch_must_divide(shakespeare, tmp_path, capsys):
    err = run_error(small_run(shakespeare, tmp_path / "out", "--total_batch_size", "300"), capsys)
    assert "total_batch_size 300 is not a multiple" in err


def test_missing_data_dir_with_prepared_shards_source(tmp_path, capsys):
    argv = small_run(tmp_path / "nothing", tmp_path / "out", "--data_source", "shards")
    assert "no manifest.json in" in run_error(argv, capsys)
    assert not (tmp_path / "nothing").exists()


def test_missing_checkpoint(shakespeare, tmp_path, capsys):
    argv = small_run(shakespeare, tmp_path / "out", "--resume_from_checkpoint", str(tmp_path / "step_000009"))
    assert "not a checkpoint folder" in run_error(argv, capsys)


# ----------------------------------------------------------------------------------------------------------------------
# in-process runs


def write_hellaswag(path):
    """Three HellaSwag-shaped examples."""
    rows = [{"ctx": f"The play begins and the king {verb}", "endings": ["speaks.", "sleeps.", "runs.", "sings."],
             "label": i % 4} for i, verb in enumerate(["stands", "sits", "enters"])]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_single_process_run_checkpoints_and_logs(shakespeare, tmp_path, capsys):
    out = tmp_path / "out"
    hellaswag = write_hellaswag(tmp_path / "hellaswag.jsonl")
    argv = small_run(shakespeare, out, "--keep_last", "1", "--peak_flops", "1e12", "--hellaswag_path", str(hellaswag),
                     "--hellaswag_every", "4", "--hellaswag_limit", "2")
    assert train_script.main(argv) == 0
    stdout = capsys.readouterr().out
    assert [step for step, _ in list_checkpoints(out)] == [4]  # step 2 was written, then pruned
    checkpoint = out / "checkpoints" / "step_000004"
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "trainer_state.json",
            "training_state"} <= names
    assert not any(name.startswith(".") for name in os.listdir(out / "checkpoints"))  # no temporary folders left
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert (state["step"], state["world_size"], state["grad_accum_steps"]) == (4, 1, 2)
    assert state["loader_state"]["position"] == 4 * 256
    log = (out / "log.txt").read_text()
    assert "world_size 1" in log and "step 3 | loss " in log and "| tok/s " in log
    assert "[rank 0] sample 0: Hello, I'm a language model," in stdout
    assert set(scalars(out, "train/loss")) == {0, 1, 2, 3}
    assert set(scalars(out, "val/loss")) == {0, 2, 4}
    for tag in ("train/lr", "train/grad_norm", "train/tokens_per_sec", "train/step_time_ms", "train/mfu"):
        assert len(scalars(out, tag)) == 4
    assert set(scalars(out, "hellaswag/acc")) == set(scalars(out, "hellaswag/acc_norm")) == {0, 4}
    assert "| mfu " in log and "hellaswag acc " in log and "n 2" in log

    # a second run into the same folder would overwrite step_000004: refused before training
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert "would overwrite" in run_error(small_run(shakespeare, out), capsys)

    # a checkpoint of another architecture is refused
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    argv = small_run(shakespeare, tmp_path / "other", "--n_layer", "3", "--resume_from_checkpoint", str(checkpoint))
    assert "different model: n_layer 2 (now 3)" in run_error(argv, capsys)


def test_push_to_hub_failure_is_reported_and_the_checkpoint_kept(shakespeare, tmp_path, capsys, monkeypatch):
    """Offline, the background upload fails: training finishes, the checkpoints stay, the token is written nowhere."""
    token = "hf_" + "x" * 34
    monkeypatch.setenv("HF_TOKEN", token)
    out = tmp_path / "out"
    argv = small_run(shakespeare, out, "--push_to_hub", "--hub_model_id", "someone/minigpt-test")
    assert train_script.main(argv) == 0
    captured = capsys.readouterr()
    log = (out / "log.txt").read_text()
    assert "someone/minigpt-test" in log  # the upload error, in one line, after the save
    assert [step for step, _ in list_checkpoints(out)] == [2, 4]
    assert (out / "checkpoints" / "step_000004" / "model.safetensors").is_file()
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token not in captured.out + captured.err


def test_chunked_loss_trains_like_the_plain_loss(shakespeare, tmp_path):
    losses = {}
    for chunk in ("0", "48"):
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        out = tmp_path / f"chunk{chunk}"
        assert train_script.main(small_run(shakespeare, out, "--loss_chunk_size", chunk, "--max_steps", "3")) == 0
        losses[chunk] = scalars(out, "train/loss")
    assert losses["0"].keys() == losses["48"].keys() == {0, 1, 2}
    for step, value in losses["0"].items():
        assert losses["48"][step] == pytest.approx(value, rel=1e-5)


def test_push_to_hub_needs_a_repo_id(shakespeare, tmp_path, capsys):
    assert "--hub_model_id" in run_error(small_run(shakespeare, tmp_path / "out", "--push_to_hub"), capsys)


def test_grad_accumulation_matches_one_big_batch(shakespeare, tmp_path):
    """B=4 x 2 micro-steps and B=8 x 1 see the same 256 tokens and must give the same update."""
    common = ["--max_steps", "1", "--eval_steps", "1", "--sample_max_length", "10"]
    assert train_script.main(small_run(shakespeare, tmp_path / "accum", *common)) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    # gradient checkpointing recomputes the same activations: it must not change the update either
    assert train_script.main(small_run(shakespeare, tmp_path / "big", *common, "--micro_batch_size", "8",
                                       "--gradient_checkpointing")) == 0
    accum = json.loads((tmp_path / "accum/checkpoints/step_000001/trainer_state.json").read_text())
    big = json.loads((tmp_path / "big/checkpoints/step_000001/trainer_state.json").read_text())
    assert (accum["grad_accum_steps"], big["grad_accum_steps"]) == (2, 1)
    for tag in ("train/loss", "train/grad_norm"):  # the norm checks that backward() divided by grad_accum
        assert scalars(tmp_path / "accum", tag)[0] == pytest.approx(scalars(tmp_path / "big", tag)[0], rel=1e-5)
    a, b = weights(tmp_path / "accum/checkpoints/step_000001"), weights(tmp_path / "big/checkpoints/step_000001")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    set_seed(1337)  # the trainer's default seed: the weights before the step
    initial = MiniGPTForCausalLM(MiniGPTConfig.from_preset("tiny", n_layer=2, n_embd=64, block_size=64)).state_dict()
    moved = (a["transformer.h.0.mlp.c_fc.weight"] - initial["transformer.h.0.mlp.c_fc.weight"]).abs().max()
    assert moved > 1e-4


def test_init_from_gpt2_and_minigpt_folders(shakespeare, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64)).save_pretrained(gpt2)
    common = ["--max_steps", "1", "--eval_steps", "1", "--sample_max_length", "10"]
    argv = small_run(shakespeare, tmp_path / "from_gpt2", *common)[len(SMALL_MODEL):]
    assert train_script.main([*argv, "--init_from", str(gpt2)]) == 0
    from_gpt2 = tmp_path / "from_gpt2/checkpoints/step_000001"
    config = json.loads((from_gpt2 / "config.json").read_text())
    assert (config["model_type"], config["n_layer"], config["vocab_size"]) == ("minigpt", 2, 50304)

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    argv = small_run(shakespeare, tmp_path / "from_minigpt", *common)[len(SMALL_MODEL):]
    assert train_script.main([*argv, "--init_from", str(from_gpt2)]) == 0
    assert "model " + str(from_gpt2) in (tmp_path / "from_minigpt/log.txt").read_text()


def test_fp16_run_on_cpu_logs_loss_scale(shakespeare, tmp_path):
    out = tmp_path / "fp16"
    argv = small_run(shakespeare, out, "--mixed_precision", "fp16", "--max_steps", "2", "--micro_batch_size", "2",
                     "--total_batch_size", "64", "--eval_steps", "1", "--sample_max_length", "12")
    assert train_script.main(argv) == 0
    assert set(scalars(out, "train/loss_scale").values()) == {65536.0}
    assert scalars(out, "train/skipped_steps") == {0: 0.0, 1: 0.0}
    assert "| scale 65536 | skipped 0" in (out / "log.txt").read_text()
    assert (out / "checkpoints/step_000002/training_state/scaler.pt").is_file()


def small_prepared(mixed_precision, fused=False):
    """An Accelerator set up as train.py does, with the small model and its AdamW prepared."""
    accelerator = Accelerator(mixed_precision=mixed_precision)
    enable_cpu_fp16(accelerator)
    accelerator.gradient_accumulation_steps = 2
    torch.manual_seed(0)
    model = MiniGPTForCausalLM(MiniGPTConfig.from_preset("tiny", n_layer=2, n_embd=64, block_size=64))
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-3, betas=(0.9, 0.95), fused=fused)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


@pytest.mark.parametrize("fused", [False, True], ids=["adamw", "fused-adamw"])
def test_fp16_overflow_skips_the_step_and_lowers_the_scale(shakespeare, fused):
    accelerator, model, optimizer = small_prepared("fp16", fused)
    assert accelerator.scaler is not None and accelerator.native_amp
    loader = DistributedTokenLoader(shakespeare, "train", 1, 16)
    loss, norm, skipped = training.train_step(model, optimizer, loader, accelerator, 2, 1e-3, 1.0)
    assert not skipped and torch.isfinite(norm) and accelerator.scaler.get_scale() == 65536.0

    weight = model.transformer.h[0].mlp.c_fc.weight
    hook = weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, norm, skipped = training.train_step(model, optimizer, loader, accelerator, 2, 1e-3, 1.0)
    hook.remove()
    assert skipped and not torch.isfinite(norm)
    assert accelerator.scaler.get_scale() == 32768.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no weight moved

    loss, norm, skipped = training.train_step(model, optimizer, loader, accelerator, 2, 1e-3, 1.0)
    assert not skipped and torch.isfinite(loss) and not torch.equal(before["transformer.h.0.mlp.c_fc.weight"], weight)


@pytest.mark.parametrize("mixed_precision, low", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_layernorm_runs_in_fp32_under_autocast(mixed_precision, low):
    """Matmuls run in 16 bits; every LayerNorm sees and returns fp32 (the residual stream stays fp32)."""
    accelerator, model, _ = small_prepared(mixed_precision)
    seen = {}
    for name, module in accelerator.unwrap_model(model).named_modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.Linear)):
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0].dtype, o.dtype)))
    x = torch.randint(0, 50257, (2, 16))
    out = model(x, labels=x)
    layer_norms = {name: dtypes for name, dtypes in seen.items() if "ln_" in name}
    assert len(layer_norms) == 5 and set(layer_norms.values()) == {(torch.float32, torch.float32)}
    assert seen["transformer.h.0.mlp.c_fc"][1] == low  # autocast is on
    assert out.loss.dtype == torch.float32 and model.transformer.ln_f.weight.dtype == torch.float32


@pytest.mark.slow
def test_quick_start_command(tmp_path, offline_env):
    """`minigpt train --config configs/tiny.yaml`, shortened: prepares the embedded corpus, trains,
    evaluates, samples and checkpoints, from a fresh working directory."""
    cmd = [sys.executable, "-m", "minigpt_hf", "train", "--config", str(ROOT / "configs" / "tiny.yaml"),
           "--max_steps", "2", "--warmup_steps", "1", "--eval_steps", "1", "--sample_max_length", "16"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=offline_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out" / "tiny"
    assert (tmp_path / "data" / "shakespeare" / "manifest.json").is_file()
    assert [step for step, _ in list_checkpoints(out)] == [2]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    log = (out / "log.txt").read_text()
    assert "step 1 | loss " in log and "step 2 | val " in log and "[rank 0] sample 3: Hello" in log


@pytest.mark.slow
def test_compiled_model_trains_evaluates_generates_and_saves(shakespeare, tmp_path):
    out = tmp_path / "compiled"
    assert train_script.main(small_run(shakespeare, out, "--compile", "--max_steps", "2",
                                       "--sample_max_length", "12")) == 0
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step_000002")
    assert not any("_orig_mod" in name for name in model.state_dict())
    assert "[rank 0] sample 3: Hello" in (out / "log.txt").read_text()


# ----------------------------------------------------------------------------------------------------------------------
# two processes through accelerate launch



def two_process_run(data_dir, output_dir, *extra):
    """6 steps of the small model with dropout (so that the RNG state matters), B=4 x 2 processes x 2 micro-steps."""
    return [*small_run(data_dir, output_dir, "--max_steps", "6", "--save_every", "3", "--eval_every", "3",
                       "--sample_every", "6", "--total_batch_size", "512", "--dropout", "0.1", "--keep_last", "0"),
            *extra]


@pytest.fixture(scope="module")
def straight_run(shakespeare, tmp_path_factory):
    """6 steps on 2 processes, checkpoints at steps 3 and 6."""
    out = tmp_path_factory.mktemp("straight")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = launch_two("train", two_process_run(shakespeare, out), env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


@pytest.mark.slow
def test_two_processes_train_and_save_a_loadable_model(straight_run):
    out, proc = straight_run
    assert "world_size 2 | device cpu" in (out / "log.txt").read_text()
    # the notes' 4 samples, from the main process only (not 4 per rank)
    log = (out / "log.txt").read_text()
    assert "[rank 1] sample" not in proc.stdout and "[rank 1] sample" not in log
    assert [f"[rank 0] sample {i}: Hello, I'm a language model," in log for i in range(5)] == [True] * 4 + [False]
    checkpoint = out / "checkpoints" / "step_000006"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["grad_accum_steps"] == 2
    assert state["loader_state"]["tokens_per_step"] == 512
    assert sorted(p.name for p in (checkpoint / "training_state").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert type(model).__name__ == "MiniGPTForCausalLM" and model.config.n_layer == 2
    torch.testing.assert_close(model.state_dict()["transformer.wte.weight"], weights(checkpoint)["transformer.wte.weight"])


@pytest.mark.slow
def test_two_process_resume_is_exact(straight_run, shakespeare, tmp_path, offline_env):
    out, _ = straight_run
    resumed = tmp_path / "resumed"
    proc = launch_two("train", two_process_run(shakespeare, resumed, "--resume_from_checkpoint",
                                      str(out / "checkpoints" / "step_000003")), offline_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from" in (resumed / "log.txt").read_text()
    straight, again = scalars(out, "train/loss"), scalars(resumed, "train/loss")
    assert sorted(again) == [3, 4, 5]
    assert {step: straight[step] for step in again} == again  # bit-identical float32 losses
    assert scalars(out, "val/loss")[6] == scalars(resumed, "val/loss")[6]
    a, b = weights(out / "checkpoints" / "step_000006"), weights(resumed / "checkpoints" / "step_000006")
    assert all(torch.equal(a[name], b[name]) for name in a)
    loaders = [json.loads((d / "checkpoints/step_000006/trainer_state.json").read_text())["loader_state"]
               for d in (out, resumed)]
    assert loaders[0] == loaders[1]
