"""Nothing silently wrong on disk (issue 18, checkpoints and folders).

Checksums: the ``COMPLETE`` marker holds every file's sha256, computed while the file is written; resume, export and
push verify every byte, generate and evaluation sizes always and contents once (or with --verify); ``minigpt
verify`` checks a checkpoint or a run folder. A full disk during a save is one line naming the file, for every file
of a checkpoint (tmpfs mounts). ``--resume_from_checkpoint latest`` passes over damaged checkpoints. Overwrites
(export, convert, atomic_directory) swap folders with no moment without the target, under SIGKILL too.
"""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT
from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM, checkpoint as ckpt, integrity
from minigpt_hf.commands import convert, eval_loss, export, generate, push, verify
from test_operations import one_line_error, run_args, train

THIRD_PARTY_FILES = {"config.json", "generation_config.json", "configuration_minigpt.py", "modeling_minigpt.py",
                     "presets.py", "tokenizer.json", "tokenizer_config.json"}  # hashed by reading them back


@pytest.fixture(autouse=True)
def own_stamps(tmp_path, monkeypatch):
    """Verification stamps of this test in its own cache, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run(shakespeare, tmp_path_factory):
    """An uninterrupted 1-process run of 6 steps, checkpoints at 2, 4, 6."""
    out = tmp_path_factory.mktemp("integrity") / "run"
    assert train(run_args(shakespeare, out, "--keep_last", "0", steps=6)) == 0
    return out


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def flip_byte(path, where: float = 0.5) -> None:
    """Flip one bit of the byte at ``where`` (a fraction of the file) -- a weight changes, the file still loads."""
    with open(path, "r+b") as f:
        f.seek(int(os.path.getsize(path) * where))
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x40]))


def copy_run(run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# checksums


def test_the_marker_holds_each_files_sha256_computed_while_it_was_written(shakespeare, tmp_path, monkeypatch):
    read_back = []
    real = ckpt.sha256_file
    monkeypatch.setattr(ckpt, "sha256_file", lambda p: (read_back.append(Path(p).name), real(p))[1])
    out = tmp_path / "run"
    assert train(run_args(shakespeare, out, steps=2)) == 0
    folder = ckpt.checkpoint_path(out, 2)
    marker = json.loads((folder / ckpt.COMPLETE_NAME).read_text())
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(marker["sha256"]) == sorted(marker["files"]) == [f for f in files if f != ckpt.COMPLETE_NAME]
    for name, digest in marker["sha256"].items():
        assert sha256(folder / name) == digest, name
    # the weights, the optimizer, the RNG states and our own JSON were hashed as written, not read back
    assert set(read_back) == THIRD_PARTY_FILES
    # files torch.save wrote through the hashing writer load as before (resume is tested bit-exact elsewhere)
    assert torch.load(folder / "training_state" / "optimizer.bin", weights_only=True)["state"]


@pytest.fixture(scope="module")
def gpt2_source(tmp_path_factory):
    """A small randomly initialised GPT-2 folder, as ``minigpt convert`` reads one."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gpt2") / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(folder)
    return folder


def test_exports_and_converted_folders_carry_checksums(run, gpt2_source, tmp_path, capsys):
    assert export.main([str(ckpt.checkpoint_path(run, 6)), str(tmp_path / "gpt2")]) == 0
    assert convert.main([str(gpt2_source), str(tmp_path / "minigpt")]) == 0
    for folder, expected in ((tmp_path / "gpt2", {"model.safetensors", "vocab.json", "merges.txt", "tokenizer.json"}),
                             (tmp_path / "minigpt", {"model.safetensors", "modeling_minigpt.py", "tokenizer.json"})):
        marker = json.loads((folder / ckpt.COMPLETE_NAME).read_text())
        assert expected <= set(marker["sha256"])
        assert all(sha256(folder / n) == d for n, d in marker["sha256"].items())
        ckpt.verify_folder(folder)


def test_a_flipped_byte_in_the_weights_is_refused_by_every_reader(run, shakespeare, tmp_path, capsys):
    out = copy_run(run, tmp_path)
    folder = ckpt.checkpoint_path(out, 6)
    flip_byte(folder / "model.safetensors")
    damaged = "model.safetensors does not match the sha256 recorded when it was written"

    assert train(run_args(shakespeare, out, "--resume_from_checkpoint", str(folder), steps=6)) == 2
    assert damaged in one_line_error(capsys)
    assert export.main([str(folder), str(tmp_path / "gpt2")]) == 2
    assert damaged in one_line_error(capsys) and not (tmp_path / "gpt2").exists()
    assert push.main([str(folder), "--repo_id", "someone/tiny", "--dry_run"]) == 2
    assert damaged in one_line_error(capsys)
    assert generate.main([str(folder), "--max_length", "12", "--num_samples", "1"]) == 2  # the first read
    assert damaged in one_line_error(capsys)
    assert generate.main([str(folder), "--max_length", "12", "--num_samples", "1", "--verify"]) == 2
    assert damaged in one_line_error(capsys)
    for flags in ([], ["--verify"]):
        assert eval_loss.main(["--model", str(folder), "--data", str(shakespeare), "--max_tokens", "256", *flags]) == 2
        assert damaged in one_line_error(capsys)
    assert verify.main([str(folder)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith(f"{folder}/{damaged}") and "1 problem," in printed[-1]


def test_the_trainers_pusher_checks_every_byte_in_the_background(run, tmp_path, monkeypatch):
    from minigpt_hf.hub import HubPusher
    from test_hub import FAKE_TOKEN, RecordingApi

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    folder = ckpt.checkpoint_path(copy_run(run, tmp_path), 6)
    flip_byte(folder / "model.safetensors")
    api = RecordingApi()
    pusher = HubPusher("someone/tiny", api=api)
    assert pusher.push(folder, "step 6") is not None  # queued at once: the loop does not wait for the hashing
    (error,) = pusher.wait(timeout=120)
    assert "model.safetensors does not match the sha256" in error and api.calls == []


def test_generate_and_eval_verify_contents_once_and_again_after_a_change(run, shakespeare, tmp_path, capsys,
                                                                         monkeypatch):
    folder = tmp_path / "step"
    shutil.copytree(ckpt.checkpoint_path(run, 6), folder)
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(ckpt, "sha256_file", lambda p: (hashed.append(Path(p).name), real(p))[1])
    sample = [str(folder), "--max_length", "12", "--num_samples", "1"]

    assert generate.main(sample) == 0 and "model.safetensors" in hashed  # first read: every byte
    hashed.clear()
    assert generate.main(sample) == 0 and hashed == []  # unchanged since: sizes and a stat per file
    assert eval_loss.main(["--model", str(folder), "--data", str(shakespeare), "--max_tokens", "256"]) == 0
    assert hashed == []
    assert generate.main([*sample, "--verify"]) == 0 and "model.safetensors" in hashed
    assert not any(p.name.startswith(".") for p in folder.iterdir())  # readers write nothing into the folder
    capsys.readouterr()

    flip_byte(folder / "model.safetensors")  # a rewrite changes the file's mtime and ctime: verified again
    assert generate.main(sample) == 2 and "does not match the sha256" in one_line_error(capsys)
    # damage that leaves no trace in the file's metadata (bit rot after the stamp) is caught with --verify only
    flip_byte(folder / "model.safetensors")
    assert generate.main(sample) == 0
    flip_byte(folder / "model.safetensors")
    raw, sizes, _ = ckpt.read_marker(folder)
    ckpt._remember_verified(folder, raw, sizes)  # as if it had rotted after a clean read
    capsys.readouterr()
    assert generate.main(sample) == 0
    assert generate.main([*sample, "--verify"]) == 2 and "does not match the sha256" in one_line_error(capsys)


def test_a_copy_is_verified_again(run, tmp_path, monkeypatch):
    folder = ckpt.checkpoint_path(run, 4)
    ckpt.verify_folder(folder, contents="once")
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(ckpt, "sha256_file", lambda p: (hashed.append(Path(p).name), real(p))[1])
    ckpt.verify_folder(folder, contents="once")
    assert hashed == []
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # same bytes, other inodes and path: the stamp does not carry over
    ckpt.verify_folder(copy, contents="once")
    assert "model.safetensors" in hashed


# ----------------------------------------------------------------------------------------------------------------------
# --resume_from_checkpoint latest


def test_latest_passes_over_a_checkpoint_whose_weights_were_truncated(run, shakespeare, tmp_path, capsys):
    out = copy_run(run, tmp_path)
    weights = ckpt.checkpoint_path(out, 6) / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)  # after the marker was written: it still says the checkpoint is finished
    assert train(run_args(shakespeare, out, "--keep_last", "0", "--resume_from_checkpoint", "latest", steps=6)) == 0
    log = (out / ckpt.LOG_NAME).read_text()
    assert (f"skipped step_000006: {weights} has {size // 2:,} bytes, {size:,} were written (truncated or damaged); "
            "kept as step_000006.damaged, resuming from step_000004") in log
    assert f"resumed from {ckpt.checkpoint_path(out, 4)} at step 4" in log
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2, 4, 6]
    assert ckpt.damaged_checkpoints(out) == [out / ckpt.CHECKPOINTS_DIR / "step_000006.damaged"]
    for name in ("model.safetensors", "training_state/optimizer.bin"):  # the resumed run is exact
        assert sha256(ckpt.checkpoint_path(out, 6) / name) == sha256(ckpt.checkpoint_path(run, 6) / name)


def test_latest_refuses_when_no_checkpoint_verifies(run, shakespeare, tmp_path, capsys):
    out = copy_run(run, tmp_path)
    for step in (2, 4, 6):
        flip_byte(ckpt.checkpoint_path(out, step) / "training_state" / "optimizer.bin")
    assert train(run_args(shakespeare, out, "--resume_from_checkpoint", "latest", steps=6)) == 2
    err = one_line_error(capsys)
    assert "no checkpoint in" in err and err.count("optimizer.bin does not match the sha256") == 3
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2, 4, 6]  # nothing set aside


# ----------------------------------------------------------------------------------------------------------------------
# minigpt verify


def test_verify_a_checkpoint_a_run_and_bad_paths(run, tmp_path, capsys):
    assert verify.main([str(run)]) == 0
    assert "(run folder, " in capsys.readouterr().out.splitlines()[-1]
    assert verify.main([str(ckpt.checkpoint_path(run, 2))]) == 0
    assert "all is well" in capsys.readouterr().out

    out = copy_run(run, tmp_path)
    root = out / ckpt.CHECKPOINTS_DIR
    (root / ".step_000008.tmp-abc").mkdir()
    (root / "step_000010").mkdir()
    (root / "step_000010" / ckpt.TRAINER_STATE_NAME).write_text("{}")
    shutil.copytree(root / "step_000002", root / "step_000004.damaged")
    assert verify.main([str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "3 problems," in lines[-1]
    assert any("step_000010 is an unfinished checkpoint" in line for line in lines)
    assert any("step_000004.damaged was set aside by a resume" in line for line in lines)
    assert any(".step_000008.tmp-abc was left by an interrupted save" in line for line in lines)
    with ckpt.FolderLock(out, "test"):  # a live run: its temporaries may be saves in progress
        assert verify.main([str(out)]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert f"note: {out} is in use by pid {os.getpid()}" in lines[0] and "2 problems," in lines[-1]

    old = root / "step_000002"  # a checkpoint written before checksums: sizes only, said so
    marker = json.loads((old / ckpt.COMPLETE_NAME).read_text())
    del marker["sha256"]
    (old / ckpt.COMPLETE_NAME).write_text(json.dumps(marker))
    assert verify.main([str(old)]) == 0
    assert "note: " in capsys.readouterr().out
    (old / "config.json").write_text("{}")  # other size
    assert verify.main([str(old)]) == 1

    for bad, message in ((tmp_path / "absent", "does not exist"), (old / "config.json", "is a file"),
                         (tmp_path, "not a checkpoint, a run folder or a data folder")):
        assert verify.main([str(bad)]) == 2
        assert message in one_line_error(capsys)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert verify.main([str(plain)]) == 2 and "nothing to check its files against" in one_line_error(capsys)


# ----------------------------------------------------------------------------------------------------------------------
# a full disk while saving: one line naming the file, for every file of a checkpoint


@pytest.fixture
def tmpfs():
    """Mount small tmpfs file systems (resized with ``remount``); skipped where mounting is impossible."""
    mounted = []

    def mount(folder: Path, size: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        options = f"remount,size={size}" if folder in mounted else f"size={size}"
        cmd = ["mount", "-o", options, str(folder)] if folder in mounted else ["mount", "-t", "tmpfs", "-o", options,
                                                                               "tmpfs", str(folder)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("no mount command here: the full-disk test needs small tmpfs mounts")
        if res.returncode and not mounted:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN; unprivileged CI containers lack "
                        f"it): {res.stderr.strip()}")
        assert res.returncode == 0, res.stderr
        if folder not in mounted:
            mounted.append(folder)

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)])  # lazy: a resumed model may still map a weight file


def used_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def pages(size: int) -> int:
    return -(-size // 4096) * 4096  # what a file of this size takes on a tmpfs


@pytest.mark.slow
def test_a_full_disk_names_each_file_of_a_checkpoint_in_one_line(shakespeare, tmp_path, capsys, tmpfs):
    """The run folder's checkpoints/ is a tmpfs, resized so that each file of the step-4 checkpoint in turn is the
    one that fills it: every time one line naming that file, exit 2, step 2 intact, nothing half-written; with the
    room for the last file the resumed run saves step 4 bit for bit as the uninterrupted one did."""
    out = tmp_path / "run"
    disk = out / ckpt.CHECKPOINTS_DIR
    tmpfs(disk, 200 << 20)
    assert train(run_args(shakespeare, out, steps=4)) == 0
    step4 = ckpt.checkpoint_path(out, 4)
    sizes = {**json.loads((step4 / ckpt.COMPLETE_NAME).read_text())["files"],
             ckpt.COMPLETE_NAME: (step4 / ckpt.COMPLETE_NAME).stat().st_size}
    exact = {n: sha256(step4 / n) for n in ("model.safetensors", "training_state/optimizer.bin",
                                            "training_state/random_states_0.pkl")}
    shutil.rmtree(step4)
    base, room, named = used_bytes(disk), 0, []
    resume = run_args(shakespeare, out, "--resume_from_checkpoint", "latest", steps=4)
    capsys.readouterr()
    while len(named) <= len(sizes):
        tmpfs(disk, base + room)
        if train(resume) == 0:
            break
        err = one_line_error(capsys)
        assert "No space left on device while writing it (checkpoint step_000004 is discarded" in err, err
        assert err.endswith("free some disk space, then resume with --resume_from_checkpoint latest"), err
        name = err.removeprefix(f"error: {step4}/").split(": ")[0]
        assert name in sizes and name not in named, err
        named.append(name)
        assert sorted(p.name for p in disk.iterdir()) == ["step_000002"]  # the temporary folder is gone
        ckpt.verify_folder(ckpt.checkpoint_path(out, 2))
        room += pages(sizes[name])
    assert sorted(named) == sorted(sizes)  # each file filled the disk once, named each time
    assert named[0] == "training_state/optimizer.bin" and named[-1] == ckpt.COMPLETE_NAME
    for name, digest in exact.items():
        assert sha256(step4 / name) == digest, name

    # fp16 adds the loss scaler's state: the disk filled just after the optimizer's file
    out = tmp_path / "fp16"
    disk = out / ckpt.CHECKPOINTS_DIR
    tmpfs(disk, 200 << 20)
    fp16 = ("--mixed_precision", "fp16")
    assert train(run_args(shakespeare, out, *fp16, steps=4)) == 0
    optimizer = (ckpt.checkpoint_path(out, 4) / "training_state" / "optimizer.bin").stat().st_size
    shutil.rmtree(ckpt.checkpoint_path(out, 4))
    tmpfs(disk, used_bytes(disk) + pages(optimizer))
    capsys.readouterr()
    assert train(run_args(shakespeare, out, *fp16, "--resume_from_checkpoint", "latest", steps=4)) == 2
    assert one_line_error(capsys).startswith(f"error: {ckpt.checkpoint_path(out, 4)}/training_state/scaler.pt: No "
                                             "space left on device")


# ----------------------------------------------------------------------------------------------------------------------
# overwrites without a missing moment


def leftovers_beside(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name)


def test_an_overwrite_fsyncs_the_new_folder_then_exchanges_it_with_the_old(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with ckpt.atomic_directory(target) as tmp:
        (tmp / "old.txt").write_text("old")
    events = []
    real_fsync, real_exchange = os.fsync, integrity.exchange
    monkeypatch.setattr(ckpt.os, "fsync", lambda fd: (events.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                       real_fsync(fd))[1])

    def exchange(a, b):
        events.append(("exchange", target.exists()))
        done = real_exchange(a, b)
        events.append(("exchanged", done, target.exists(), (target / "new.txt").is_file()))
        return done

    monkeypatch.setattr(integrity, "exchange", exchange)
    with ckpt.atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    swap = events.index(("exchange", True))
    assert any(str(e).endswith("new.txt") for e in events[:swap])  # the new folder is on disk before the swap
    assert events[swap + 1] == ("exchanged", True, True, True)  # renameat2 did it: one step, never missing
    assert [p.name for p in target.iterdir()] == ["new.txt"] and leftovers_beside(target) == []


def test_without_exchange_an_interrupted_overwrite_is_recovered_by_the_next_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(integrity, "exchange", lambda a, b: False)  # a kernel or file system without it
    target = tmp_path / "out"
    for text in ("old", "new"):
        with ckpt.atomic_directory(target, overwrite=True) as tmp:
            (tmp / "file.txt").write_text(text)
    assert (target / "file.txt").read_text() == "new" and leftovers_beside(target) == []
    # the state a kill between the two renames leaves: no target, the old copy aside, the new one complete
    os.rename(target, tmp_path / ".trash-out-123-456")
    (tmp_path / ".out.tmp-abc").mkdir()
    (tmp_path / ".trash-out-other-1-2").mkdir()  # another target's (out-other): not ours to touch
    with caplog.at_level("WARNING", logger="minigpt_hf.checkpoint"):
        with ckpt.atomic_directory(target, overwrite=True) as tmp:
            assert (target / "file.txt").read_text() == "new"  # put back before anything else happens
            (tmp / "file.txt").write_text("newer")
    assert (target / "file.txt").read_text() == "newer"
    assert f"restored {target} from .trash-out-123-456" in caplog.text
    assert f"removed {tmp_path / '.out.tmp-abc'}, left by an interrupted write of out" in caplog.text
    assert leftovers_beside(target) == [".trash-out-other-1-2"]


def test_a_live_writers_temporary_is_never_swept(tmp_path):
    target = tmp_path / "out"
    with ckpt.atomic_directory(target) as tmp:
        notes = ckpt.sweep_target(target)  # as another run of the command would, meanwhile
        assert tmp.is_dir() and notes == [f"left {tmp} alone: a live process holds it (or this file system cannot "
                                          "lock folders)"]  # held by this writer's flock
    assert target.is_dir() and leftovers_beside(target) == []


KILLER = textwrap.dedent(r"""
    # Runs `minigpt COMMAND SOURCE TARGET --overwrite` in a forked child per line read ("MODE DELAY"), kills it with
    # SIGKILL after DELAY seconds (0: lets it finish; in mode "writing", DELAY seconds after the new folder is begun,
    # by the child itself) and prints how it ended. The imports are paid once.
    import json, os, signal, sys, threading, time
    import torch
    torch.set_num_threads(1)
    from minigpt_hf import checkpoint, integrity
    from minigpt_hf.commands import convert, export
    command, source, target, logs = sys.argv[1:]
    main = {"export": export.main, "convert": convert.main}[command]
    real_exchange, real_rename, real_tempdir = integrity.exchange, os.rename, checkpoint._locked_tempdir

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def child(mode, delay, n, start):
        fd = os.open(f"{logs}/{n}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1), os.dup2(fd, 2)
        if mode == "timed":  # when the writing starts and when the swap happens, seconds after the fork
            checkpoint._locked_tempdir = lambda p: (print("writing", time.time() - start), real_tempdir(p))[1]
            integrity.exchange = lambda a, b: (print("swap", time.time() - start), real_exchange(a, b))[1]
        if mode == "writing":  # timed from the start of the writing, whatever the reading before it took
            checkpoint._locked_tempdir = lambda p: (threading.Timer(delay, die).start(), real_tempdir(p))[1]
        if mode.startswith("fallback"):
            integrity.exchange = lambda a, b: False
        if mode == "before-swap":
            integrity.exchange = lambda a, b: die()
        if mode == "after-swap":
            integrity.exchange = lambda a, b: (real_exchange(a, b), die())
        if mode == "fallback-between":
            os.rename = lambda a, b: (real_rename(a, b), ".trash-" in str(b) and die())
        os._exit(main([source, target, "--overwrite"]))

    print("ready", flush=True)
    for n, line in enumerate(sys.stdin):
        mode, delay = line.split()
        start = time.time()
        pid = os.fork()
        if pid == 0:
            child(mode, float(delay), n, start)
        if float(delay) and mode != "writing":
            time.sleep(float(delay))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"log": f"{logs}/{n}.txt", "killed": os.WIFSIGNALED(status),
                          "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                          "seconds": time.time() - start}), flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["export", "convert"])
def test_sigkill_during_an_overwrite_never_leaves_the_target_missing(command, run, gpt2_source, tmp_path,
                                                                     offline_env):
    """SIGKILL at 14 random moments of `COMMAND SOURCE TARGET --overwrite`, and exactly before and after the swap:
    the target is always there and verifies. Without RENAME_EXCHANGE (forced), a kill between the two renames
    leaves no target, and the next run puts the old one back and says so. The next run of the command sweeps
    every leftover and says where it was; then nothing but the target remains."""
    source = ckpt.checkpoint_path(run, 6) if command == "export" else gpt2_source
    target, logs = tmp_path / "out" / "model", tmp_path / "logs"
    logs.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", KILLER, command, str(source), str(target), str(logs)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=dict(offline_env, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false"))

    def attempt(mode: str, delay: float = 0.0) -> dict:
        proc.stdin.write(f"{mode} {delay}\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    try:
        assert proc.stdout.readline().strip() == "ready"
        first = attempt("exchange")
        assert first["code"] == 0, Path(first["log"]).read_text()[-2000:]
        timed = attempt("timed")
        times = dict(line.split() for line in Path(timed["log"]).read_text().splitlines()
                     if line.startswith(("writing ", "swap ")))
        writing, swap = float(times["writing"]), float(times["swap"])
        # 7 kills while the source is read and converted (timed from the fork), 7 while the new folder is written,
        # swapped in and the old one deleted (timed from the start of the writing: on a fast machine that phase is
        # a tenth of a second, shorter than the reading's jitter from run to run)
        rng, after_swap = random.Random(18), min(0.05, (timed["seconds"] - swap) / 2)
        kills = [("exchange", rng.uniform(0, writing)) for _ in range(7)] + [
            ("writing", rng.uniform(0, 0.9 * (swap - writing + after_swap))) for _ in range(7)]
        outcomes = []
        for mode, delay in kills + [("before-swap", 0), ("after-swap", 0)]:
            before = target.stat().st_ino
            outcome = attempt(mode, delay)
            assert target.is_dir(), (mode, delay, leftovers_beside(target))  # never missing
            ckpt.verify_folder(target)  # and complete: every file as written
            outcomes.append((outcome["killed"], target.stat().st_ino != before))  # (killed, after the swap)
        print(f"{command}: writing at {writing:.2f} s, swap at {swap:.2f} s of {timed['seconds']:.2f} s; killed, after "
              f"the swap: {outcomes}")
        assert sum(killed for killed, _ in outcomes[:-2]) >= 10 and outcomes[-2:] == [(True, False), (True, True)]
        final = attempt("exchange")
        assert final["code"] == 0 and leftovers_beside(target) == []
        assert "left by an interrupted write of model" in Path(final["log"]).read_text()

        # without RENAME_EXCHANGE: two renames, a moment without the target, recovered by the next run
        assert attempt("fallback-between")["killed"] and not target.exists()
        trash = [name for name in leftovers_beside(target) if name.startswith(".trash-model-")]
        assert len(trash) == 1
        final = attempt("fallback")
        assert final["code"] == 0 and target.is_dir() and leftovers_beside(target) == []
        log = Path(final["log"]).read_text()
        assert f"restored {target} from {trash[0]}" in log and "left by an interrupted write of model" in log
        ckpt.verify_folder(target)
    finally:
        proc.stdin.close()
        proc.wait(timeout=120)


def test_verify_a_data_folder(shakespeare, tmp_path, capsys):
    """``minigpt verify DATA_DIR`` checks the shards against the manifest's hashes: exit 0 when whole, 1 and one
    line naming the shard when one was rewritten with other valid tokens of the same size."""
    import shutil

    import numpy as np

    from minigpt_hf.commands import verify

    data = tmp_path / "data"
    shutil.copytree(shakespeare, data)
    assert verify.main([str(data)]) == 0
    assert "all is well" in capsys.readouterr().out
    shard = sorted(data.glob("*_train_*.npy"))[0]
    tokens = np.load(shard)
    np.save(shard, (tokens[::-1]).copy())  # the same size and valid ids, other contents
    assert verify.main([str(data)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and shard.name in lines[0] and "1 problem," in lines[1]
