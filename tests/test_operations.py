"""Operating a run: what kills, signals, full disks, two jobs on one folder and bad input leave behind.

Each test names the promise it checks ("Operating a run" in the README): a checkpoint is finished only with its
marker; deleting and publishing are crash-safe; preparing data never destroys the old dataset; one folder, one run;
SIGTERM / Ctrl-C stop with a checkpoint; resume says what it changes; elastic resume; one-line errors.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from helpers import launch_cmd, launch_env, launch_two
from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM, checkpoint as ckpt, data
from minigpt_hf.commands import eval_loss, generate, prepare_data, push
from minigpt_hf.commands import train as train_command

SMALL = ["--preset", "tiny", "--n_layer", "2", "--n_embd", "64", "--block_size", "64"]


def run_args(data_dir, out, *extra, steps=4):
    return [*SMALL, "--data_dir", str(data_dir), "--micro_batch_size", "4", "--seq_len", "32",
            "--total_batch_size", "256", "--max_steps", str(steps), "--warmup_steps", "1", "--max_lr", "1e-3",
            "--min_lr", "1e-4", "--mixed_precision", "no", "--eval_every", "1000", "--eval_steps", "1",
            "--sample_every", "1000", "--sample_max_length", "12", "--num_samples", "1", "--save_every", "2",
            "--dropout", "0.1", "--output_dir", str(out), *extra]


def train(argv) -> int:
    """An in-process run, on one thread like the subprocess runs (OMP_NUM_THREADS=1), so that their float32
    results can be compared bit for bit."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_command.main(argv)
    finally:
        torch.set_num_threads(threads)


def one_line_error(capsys) -> str:
    """The one ``error: ...`` line on stderr (progress bars aside), with no traceback."""
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def losses(out) -> dict:
    """{step: loss} from log.txt (the 4-decimal figures) and TensorBoard (exact float32)."""
    from minigpt_hf.checkpoint import read_scalars

    steps, values = read_scalars(Path(out) / "tensorboard")["train/loss"]
    return dict(zip(steps.tolist(), values.tolist()))


@pytest.fixture(scope="module")
def straight(shakespeare, tmp_path_factory):
    """An uninterrupted 1-process run of 8 steps, checkpoints at 2, 4, 6, 8."""
    out = tmp_path_factory.mktemp("straight")
    assert train(run_args(shakespeare, out, "--keep_last", "0", steps=8)) == 0
    return out


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints that look finished are finished


def test_a_kill_during_pruning_never_leaves_a_step_folder_without_files(straight, shakespeare, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    real_rmtree = shutil.rmtree

    def killed_halfway(path, *args, **kwargs):
        (Path(path) / "model.safetensors").unlink()  # some files gone ...
        raise KeyboardInterrupt  # ... then the process dies

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.prune_checkpoints(out, keep_last=3)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names[0].startswith(".trash-step_000002") and names[1:] == ["step_000004", "step_000006", "step_000008"]
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [4, 6, 8]
    # the next run sweeps the leftover while it holds the folder's lock, and resumes from the newest
    assert train(run_args(shakespeare, out, "--keep_last", "0", "--resume_from_checkpoint", "latest", steps=8)) == 0
    assert not any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())
    assert "removed .trash-step_000002" in (out / "log.txt").read_text()


def test_finished_means_the_marker_everywhere(straight, shakespeare, tmp_path, capsys):
    """A step folder without COMPLETE (an older version killed while pruning) is never taken for a checkpoint:
    resume skips it, generate / push / eval name it."""
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    broken = out / "checkpoints" / "step_000010"
    shutil.copytree(out / "checkpoints" / "step_000008", broken)
    (broken / ckpt.COMPLETE_NAME).unlink()
    (broken / "model.safetensors").unlink()
    assert ckpt.list_checkpoints(out)[-1][0] == 8
    assert ckpt.resolve_checkpoint("latest", out).name == "step_000008"
    with pytest.raises(ckpt.IncompleteCheckpointError, match="unfinished checkpoint"):
        ckpt.resolve_checkpoint(str(broken), out)
    assert generate.main([str(broken)]) == 2
    assert "step_000010 is an unfinished checkpoint" in one_line_error(capsys)
    assert push.main([str(broken), "--repo_id", "someone/x", "--dry_run"]) == 2
    assert "unfinished checkpoint" in one_line_error(capsys)
    assert eval_loss.main(["--model", str(broken), "--data", str(shakespeare)]) == 2
    assert "unfinished checkpoint" in one_line_error(capsys)


def test_a_truncated_weight_file_is_named(straight, shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    weights = out / "checkpoints" / "step_000008" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert generate.main([str(weights.parent), "--max_length", "12"]) == 2
    err = one_line_error(capsys)
    assert "model.safetensors has" in err and "truncated or damaged" in err
    argv = run_args(shakespeare, out, "--resume_from_checkpoint", str(weights.parent), steps=8)
    assert train(argv) == 2 and "truncated or damaged" in one_line_error(capsys)


def test_temporaries_of_interrupted_saves_are_swept_on_start(straight, shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    for name in (".step_000010.tmp-abc", ".trash-step_000002-99"):
        (out / "checkpoints" / name / "training_state").mkdir(parents=True)
        (out / "checkpoints" / name / "model.safetensors").write_bytes(b"\0" * 1000)
    assert train(run_args(shakespeare, out, "--resume_from_checkpoint", "latest", steps=8)) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step_00000{i}" for i in (2, 4, 6, 8)]
    log = (out / "log.txt").read_text()
    assert "removed .step_000010.tmp-abc" in log and "removed .trash-step_000002-99" in log


def test_a_held_lock_protects_the_temporaries(straight, shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    (out / "checkpoints" / ".step_000010.tmp-live").mkdir()
    with ckpt.FolderLock(out, "test"):
        assert train(run_args(shakespeare, out, "--resume_from_checkpoint", "latest", steps=8)) == 2
        assert f"pid {os.getpid()}" in one_line_error(capsys)
    assert (out / "checkpoints" / ".step_000010.tmp-live").is_dir()  # another live run's save: not touched


def test_publishing_is_durable_and_never_replaces_a_finished_checkpoint(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(ckpt.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                       real_fsync(fd)))
    target = tmp_path / "step_000001"
    with ckpt.atomic_directory(target) as tmp:
        (tmp / "a.bin").write_bytes(b"1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"2")
    assert any(p.endswith("a.bin") for p in synced) and any(p.endswith("b.bin") for p in synced)
    assert str(tmp_path) in synced  # the parent folder after the rename
    assert synced.index(str(tmp_path)) == len(synced) - 1
    other = tmp_path / ".other"
    other.mkdir()
    (other / "x").write_text("new")
    with pytest.raises(FileExistsError, match="not replaced"):
        ckpt.publish(other, target)
    assert (target / "a.bin").read_bytes() == b"1" and not (target / "x").exists()


def test_a_full_disk_during_a_save_leaves_no_partial_checkpoint(shakespeare, tmp_path, monkeypatch, capsys):
    from minigpt_hf import training

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "model.safetensors")

    monkeypatch.setattr(training.ckpt, "write_trainer_state", no_space)
    out = tmp_path / "run"
    assert train(run_args(shakespeare, out, steps=2)) == 2
    err = one_line_error(capsys)
    assert "No space left on device" in err and "free some disk space" in err
    assert list((out / "checkpoints").iterdir()) == []  # the temporary folder was removed


# ----------------------------------------------------------------------------------------------------------------------
# data preparation never destroys the old dataset


def test_overwrite_that_fails_keeps_the_old_dataset(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Document number {i} of the old corpus."}) + "\n"
                            for i in range(400)))
    out = tmp_path / "data"
    assert prepare_data.main(["--out_dir", str(out), "--input", str(docs), "--val_tokens", "100",
                              "--shard_size", "2000", "--num_proc", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": f"New document {i}."}) + "\n" for i in range(149)) + "{not json\n")
    assert prepare_data.main(["--out_dir", str(out), "--input", str(bad), "--overwrite", "--val_tokens", "100",
                              "--shard_size", "200", "--num_proc", "1"]) == 2
    assert "bad.jsonl, line 150: invalid JSON" in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == before
    data.DistributedTokenLoader(out, "train", 2, 8).next_batch()  # still loads

    # a kill in the middle of the new dataset: the old one stays the dataset
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"Fresh text {i}, quite different."}) + "\n" for i in range(300)))
    write = data._write_shard

    def killed(path, tokens, tag):
        write(path, tokens, tag)
        raise KeyboardInterrupt

    data._write_shard = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            data.prepare_shards(data.iter_file_documents([good]), out, prefix="local", shard_size=200,
                                val_tokens=100, overwrite=True, progress=False)
    finally:
        data._write_shard = write
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == before
    # and a successful overwrite replaces it, leaving only the new shards
    manifest = data.prepare_shards(data.iter_file_documents([good]), out, prefix="local", shard_size=200,
                                   val_tokens=100, overwrite=True, progress=False)
    assert sorted(p.name for p in out.glob("*.npy")) == sorted(s["file"] for s in manifest["shards"])


def test_shard_temporaries_are_unique_per_run(tmp_path, monkeypatch):
    names = []
    real_replace = os.replace
    monkeypatch.setattr(data.os, "replace", lambda a, b: (names.append(Path(a).name), real_replace(a, b)))
    docs = [f"Some text number {i}." for i in range(50)]
    data.prepare_shards(docs, tmp_path / "a", val_tokens=50, shard_size=100, progress=False)
    data.prepare_shards(docs, tmp_path / "b", val_tokens=50, shard_size=100, progress=False)
    shard_tmps = [n for n in names if ".npy.tmp-" in n]
    assert len(shard_tmps) == len(set(shard_tmps)) and len({n.rsplit("-", 1)[1] for n in shard_tmps}) == 2


def test_a_second_preparation_of_one_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "data"
    with ckpt.FolderLock(out, "prepare-data", data.DATA_LOCK_NAME):
        assert prepare_data.main(["--out_dir", str(out), "--num_proc", "1"]) == 2
        err = one_line_error(capsys)
    assert f"is in use by pid {os.getpid()}" in err and "prepare-data" in err
    assert not (out / data.MANIFEST_NAME).exists()


# ----------------------------------------------------------------------------------------------------------------------
# one folder, one run


HOLDER = textwrap.dedent("""
    import sys, time
    from minigpt_hf.checkpoint import FolderLock
    FolderLock(sys.argv[1], "train").acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_two_runs_on_one_folder_and_a_dead_owner(shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert train(run_args(shakespeare, out, steps=2)) == 2
        err = one_line_error(capsys)
        assert f"is in use by pid {holder.pid} on " in err and "since 20" in err and "wait for it" in err
        assert not (out / "checkpoints").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, the lock itself dies with the process
        holder.wait()
    assert json.loads((out / ckpt.LOCK_NAME).read_text())["pid"] == holder.pid
    assert train(run_args(shakespeare, out, steps=2)) == 0
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2]
    assert json.loads((out / ckpt.LOCK_NAME).read_text())["pid"] == os.getpid()


# ----------------------------------------------------------------------------------------------------------------------
# resume that says what it changes


def test_resume_refuses_a_changed_recipe_unless_allowed(straight, shakespeare, tmp_path, capsys):
    step4 = straight / "checkpoints" / "step_000004"
    argv = run_args(shakespeare, tmp_path / "a", "--resume_from_checkpoint", str(step4), "--max_lr", "2e-3",
                    "--seed", "7", steps=8)
    assert train(argv) == 2
    err = one_line_error(capsys)
    assert "another recipe: max_lr 0.001 -> 0.002; seed 1337 -> 7" in err and "--allow_recipe_change" in err
    assert train([*argv, "--allow_recipe_change"]) == 0
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "recipe change on resume (--allow_recipe_change): max_lr 0.001 -> 0.002" in log


def test_resume_refuses_data_prepared_again(straight, shakespeare, tmp_path, capsys):
    data_dir = tmp_path / "data"
    shutil.copytree(shakespeare, data_dir)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    manifest["source"] = {"type": "files", "paths": ["elsewhere.txt"]}
    (data_dir / "manifest.json").write_text(json.dumps(manifest))
    argv = run_args(data_dir, tmp_path / "a", "--resume_from_checkpoint", str(straight / "checkpoints/step_000004"),
                    steps=8)
    assert train(argv) == 2
    assert "another recipe: data " in one_line_error(capsys)


def test_a_missing_rng_state_is_an_error(straight, shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    step = out / "checkpoints" / "step_000004"
    (step / "training_state" / "random_states_0.pkl").unlink()
    ckpt.mark_complete(step)  # even in a folder whose marker agrees
    assert train(run_args(shakespeare, tmp_path / "b", "--resume_from_checkpoint", str(step), steps=8)) == 2
    assert "random_states_0.pkl is missing" in one_line_error(capsys)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_text(p.read_text()[:40]), "trainer_state.json is not valid JSON"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "recipe"})),
     None),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "step"})),
     "trainer_state.json lacks step"),
])
def test_a_damaged_trainer_state_is_named(straight, shakespeare, tmp_path, capsys, damage, message):
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    step = out / "checkpoints" / "step_000004"
    damage(step / ckpt.TRAINER_STATE_NAME)
    ckpt.mark_complete(step)
    code = train(run_args(shakespeare, tmp_path / "b", "--resume_from_checkpoint", str(step), steps=8))
    if message is None:
        assert code == 2 and "lacks recipe" in one_line_error(capsys)
    else:
        assert code == 2 and message in one_line_error(capsys)


# ----------------------------------------------------------------------------------------------------------------------
# every bad input, one clear line


def test_bad_training_arguments(shakespeare, tmp_path, capsys):
    cases = [
        (["--micro_batch_size", "0"], "--micro_batch_size 0: must be at least 1"),
        (["--micro_batch_size", "-2"], "--micro_batch_size -2: must be at least 1"),
        (["--keep_last", "-1"], "--keep_last -1: must be 0 (keep all) or more"),
        (["--max_lr", "-1e-3"], "--max_lr -0.001: must be positive"),  # a negative number after a space is a value
        (["--output_dir", str(shakespeare / "manifest.json")], "is a file, not a folder"),
    ]
    for extra, message in cases:
        argv = run_args(shakespeare, tmp_path / "out", steps=2)
        argv[argv.index("--output_dir"):argv.index("--output_dir") + 2] = []
        argv += ["--output_dir", str(tmp_path / "out"), *extra]
        assert train(argv) == 2, extra
        assert message in one_line_error(capsys), extra


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("preset: tiny\nmax_steps: 7\n  max_lr: [oops\n")
    assert train(["--config", str(config)]) == 2
    assert f"{config}, line 3: invalid YAML" in one_line_error(capsys)


def test_bad_data_inputs(tmp_path, capsys):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    assert prepare_data.main(["--out_dir", str(tmp_path / "d1"), "--input", str(latin), "--num_proc", "1"]) == 2
    assert "latin1.jsonl, line 2: not UTF-8" in one_line_error(capsys)
    (tmp_path / "afile").write_text("x")
    assert prepare_data.main(["--out_dir", str(tmp_path / "afile"), "--num_proc", "1"]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)


def test_a_truncated_shard_is_named(tmp_path):
    manifest = data.prepare_shards([f"Line {i} of text." for i in range(200)], tmp_path, val_tokens=50,
                                   shard_size=400, progress=False)
    shard = tmp_path / manifest["shards"][1]["file"]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 100)
    with pytest.raises(ValueError, match=f"shard {shard} is not a whole .npy token array"):
        data.DistributedTokenLoader(tmp_path, "train", 2, 8)


def test_disk_full_or_read_only_while_preparing(tmp_path, monkeypatch, capsys):
    for code, hint in ((errno.ENOSPC, "free some disk space"), (errno.EROFS, "choose a writable folder")):
        def fail(path, tokens, tag, code=code):
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(data, "_write_shard", fail)
        out = tmp_path / f"d{code}"
        assert prepare_data.main(["--out_dir", str(out), "--num_proc", "1"]) == 2
        err = one_line_error(capsys)
        assert os.strerror(code) in err and hint in err
        assert sorted(p.name for p in out.iterdir()) == [data.DATA_LOCK_NAME]


def test_bad_generate_inputs(capsys, monkeypatch):
    cases = [
        (["--preset", "tiny", "--prompt", "  "], "--prompt is empty"),
        (["--preset", "tiny", "--top_p", "0"], "--top_p 0.0: must be in (0, 1]"),
        (["--preset", "tiny", "--top_p", "1.5"], "--top_p 1.5: must be in (0, 1]"),
        (["--preset", "tiny", "--device", "cuda"], "no CUDA GPU is available here; use --device cpu"),
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv, message in cases:
        assert generate.main(argv) == 2, argv
        assert message in one_line_error(capsys), argv


def test_bad_eval_and_push_inputs(straight, tmp_path, capsys):
    model = straight / "checkpoints" / "step_000008"
    for flag in ("--batch_size", "--seq_len"):
        assert eval_loss.main(["--model", str(model), "--data", str(tmp_path), flag, "0"]) == 2
        assert f"{flag} 0: must be at least 1" in one_line_error(capsys)
    assert push.main([str(model), "--repo_id", "not a repo!", "--dry_run"]) == 2
    assert "--repo_id 'not a repo!' is not a Hub repo id" in one_line_error(capsys)
    bad = tmp_path / "hellaswag.json"
    bad.write_text("{\"acc\": 0.3")
    assert push.main([str(model), "--repo_id", "someone/tiny", "--dry_run", "--hellaswag", str(bad)]) == 2
    assert "not the JSON that minigpt eval-hellaswag --output writes" in one_line_error(capsys)


# ----------------------------------------------------------------------------------------------------------------------
# signals and elastic resume (subprocesses)


def wait_for(path: Path, text: str, proc, timeout: float = 180) -> None:
    start = time.time()
    while time.time() - start < timeout:
        if path.is_file() and text in path.read_text():
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_with_a_checkpoint_and_resume_is_exact(straight, shakespeare, tmp_path, sig):
    out = tmp_path / "run"
    argv = run_args(shakespeare, out, "--keep_last", "0", steps=8)
    proc = subprocess.Popen([sys.executable, "-m", "minigpt_hf", "train", *argv], env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "log.txt", "step 0 | loss", proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-3000:]
    (line,) = [line for line in stdout.splitlines() if line.startswith("stopped by")]
    step = int(line.split(" at step ")[1].split(":")[0])
    assert line.startswith(f"stopped by {sig.name} at step {step}: checkpoint {ckpt.checkpoint_path(out, step)}")
    assert "--resume_from_checkpoint latest" in line and 0 < step < 8
    # acknowledged when it arrived, naming the step it stops after (one process: the next step)
    assert stderr.count(" received: ") == 1  # (the progress bar's line may precede it on stderr)
    assert f"{sig.name} received: stopping after step {step} with a checkpoint" in stderr
    assert ckpt.list_checkpoints(out)[-1][0] == step
    assert train([*argv, "--resume_from_checkpoint", "latest"]) == 0
    assert losses(out) == losses(straight)  # float32 losses, bit for bit
    a, b = (load_file(str(d / "checkpoints" / "step_000008" / "model.safetensors")) for d in (out, straight))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(shakespeare, tmp_path):
    out = tmp_path / "run"
    argv = run_args(shakespeare, out, "--save_every", "1000", "--eval_every", "1", "--eval_steps", "30", steps=200)
    proc = subprocess.Popen([sys.executable, "-m", "minigpt_hf", "train", *argv], env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "log.txt", "step 0 | loss", proc)
    proc.send_signal(signal.SIGINT)
    for line in proc.stderr:  # the first one is taken: the run will stop after this step (and evaluate first)
        if "SIGINT received: stopping after step" in line:
            break
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=120)
    stderr = line + rest
    assert proc.returncode == 130 and "\ninterrupted\n" in stderr and "Traceback" not in stderr
    assert ckpt.list_checkpoints(out) == [] and not list((out / "checkpoints").glob(".*"))


def two_process_args(data_dir, out, *extra):
    return run_args(data_dir, out, "--total_batch_size", "512", "--save_every", "4", "--keep_last", "0", *extra,
                    steps=12)


@pytest.fixture(scope="module")
def straight_two(shakespeare, tmp_path_factory):
    """12 steps on 2 processes (B=4 x 2 x grad_accum 2), checkpoints at 4, 8, 12."""
    out = tmp_path_factory.mktemp("straight_two")
    proc = launch_two("train", two_process_args(shakespeare, out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.slow
def test_sigterm_to_a_two_process_launch(straight_two, shakespeare, tmp_path):
    """What SLURM does: SIGTERM to every process of the job. Each rank finishes the step, the checkpoint is
    written, each rank says so and exits 0; the resumed run equals the uninterrupted one."""
    out = tmp_path / "run"
    proc = subprocess.Popen(launch_cmd("train", two_process_args(shakespeare, out)), env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(out / "log.txt", "step 0 | loss", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    stops = [line for line in stdout.splitlines() if "stopped by SIGTERM at step" in line]
    assert len(stops) == 2 and any(line.startswith("[rank 1] stopped") for line in stops), stdout[-3000:]
    assert "exitcode  : 1" not in stderr  # no rank failed (the launcher itself reports the signal it got)
    step = ckpt.list_checkpoints(out)[-1][0]
    assert f"at step {step}:" in stops[0] and 0 < step < 12
    proc = launch_two("train", two_process_args(shakespeare, out, "--resume_from_checkpoint", "latest"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert losses(out) == losses(straight_two)
    a, b = (load_file(str(d / "checkpoints" / "step_000012" / "model.safetensors")) for d in (out, straight_two))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_elastic_resume_two_one_two(straight_two, shakespeare, tmp_path, monkeypatch):
    """2 -> 1 -> 2 processes: every optimizer step reads exactly the windows of the uninterrupted 2-process run."""
    W, B, T = 2, 4, 32
    reference = [data.DistributedTokenLoader(shakespeare, "train", B, T, rank=r, world_size=W, grad_accum=2)
                 for r in range(W)]
    expected = [{tuple(loader.next_window().flatten().tolist()) for loader in reference for _ in range(2)}
                for _ in range(12)]  # grad_accum 2 on 2 ranks: windows 0..3 of each step

    seen = []
    real = data.DistributedTokenLoader.next_batch

    def recording(self):
        x, y = real(self)
        if self.split == "train":
            seen.append(tuple(torch.cat([x, y[:, -1:]], dim=1).flatten().tolist()))
        return x, y

    monkeypatch.setattr(data.DistributedTokenLoader, "next_batch", recording)
    one = tmp_path / "one"
    argv = two_process_args(shakespeare, one, "--resume_from_checkpoint",
                            str(straight_two / "checkpoints" / "step_000004"))
    argv[argv.index("--max_steps") + 1] = "12"
    assert train(argv) == 0
    assert "elastic resume: 2 -> 1 processes" in (one / "log.txt").read_text()
    steps = [set(seen[i:i + 4]) for i in range(0, len(seen), 4)]  # grad_accum 4 on 1 rank
    assert steps == expected[4:12]

    two = tmp_path / "two"
    proc = launch_two("train", two_process_args(shakespeare, two, "--resume_from_checkpoint",
                                                str(one / "checkpoints" / "step_000008")))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "elastic resume: 1 -> 2 processes" in (two / "log.txt").read_text()
    state = [ckpt.read_trainer_state(d / "checkpoints" / "step_000012") for d in (two, straight_two)]
    assert state[0]["loader_state"] == state[1]["loader_state"]
    assert state[0]["tokens_seen"] == state[1]["tokens_seen"] == 12 * 512


def test_another_rank_with_an_input_error_leaves_the_line_to_the_first_then_says_it_itself(monkeypatch, capsys):
    """Under a launch every process parses the same flags; torch's launcher ends all workers when the first exits,
    so another rank that exits at once can cut the first one off before it prints (seen on a loaded CI machine:
    no line at all). It waits; if it is still alive after that, the error was its own, and it says so."""
    from minigpt_hf import commands

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(commands, "NON_MAIN_GRACE_S", 0.3)
    start = time.monotonic()
    assert train_command.main(["--keep_last", "-1"]) == 2
    assert time.monotonic() - start >= 0.3
    assert capsys.readouterr().err.splitlines() == ["[rank 1] error: --keep_last -1: must be 0 (keep all) or more"]


@pytest.mark.slow
def test_an_input_error_under_a_launch_is_printed_once(shakespeare, tmp_path):
    proc = launch_two("train", run_args(shakespeare, tmp_path / "out", "--keep_last", "-1"))
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: --keep_last -1: must be 0 (keep all) or more"]  # from rank 0 only
    assert "minigpt_hf" not in "".join(line for line in proc.stderr.splitlines() if line.lstrip().startswith("File "))
    # (what follows the line is torch's launcher reporting that its workers exited with status 2)
