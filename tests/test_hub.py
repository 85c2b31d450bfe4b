"""Sharing on the Hub, offline: the pushed folder loads without minigpt_hf, the card's metadata parses, the file list,
the token never written, and failures that are reported without touching the checkpoint."""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard
from huggingface_hub.utils import filter_repo_objects
from torch.utils.tensorboard import SummaryWriter

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM
from minigpt_hf.data import EMBEDDED_SOURCE
from minigpt_hf.checkpoint import mark_complete, redact, save_model_folder, write_trainer_state
from minigpt_hf.commands import push as push_command
from minigpt_hf.hub import HubError, HubPusher, files_to_upload, push_folder
from minigpt_hf.model_card import card_info_from_checkpoint, make_model_card, write_model_card
from minigpt_hf.training import parse_args, recipe

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
FAKE_TOKEN = "hf_fakeTokenForTests0123456789abcdefXYZ"
INFO = {
    "repo_id": "someone/minigpt-tiny",
    "data_source": {"type": "dataset", "name": "HuggingFaceFW/fineweb-edu", "config": "sample-10BT", "split": "train"},
    "step": 20,
    "tokens_seen": 20 * 8 * 64,
    "val_loss": 7.25,
    "hellaswag": {"acc": 0.24, "acc_norm": 0.26, "n": 50},
    "hyperparameters": {"max_lr": 6e-4, "batch_size": 8, "hub_token": FAKE_TOKEN},
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiniGPTForCausalLM(MiniGPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64)).eval()


@pytest.fixture
def checkpoint(tmp_path, model):
    """A checkpoint as the trainer leaves it: the model folder, trainer_state.json and training_state/ in
    {output_dir}/checkpoints/step_000020, TensorBoard scalars in {output_dir}/tensorboard (also after step 20)."""
    run = tmp_path / "run"
    # the batch and schedule are pinned here so that retuning tiny.yaml does not change the expected card
    args = parse_args(["--config", str(CONFIGS / "tiny.yaml"), "--output_dir", str(run),
                       "--data_dir", str(tmp_path / "no-data-here"), "--micro_batch_size", "4",
                       "--total_batch_size", "512", "--max_steps", "160", "--warmup_steps", "10"])
    folder = save_model_folder(model, run / "checkpoints" / "step_000020")
    (folder / "training_state").mkdir()
    (folder / "training_state" / "optimizer.bin").write_bytes(b"\0" * 1000)
    model_args, data_args, train_args = args
    write_trainer_state(folder, {"step": 20, "world_size": 1, "grad_accum_steps": 1, "tokens_seen": 20 * 512,
                                 "recipe": recipe(train_args, data_args, "0" * 16),
                                 "args": {"model": vars(model_args), "data": vars(data_args), "train": vars(train_args)}})
    mark_complete(folder)
    with SummaryWriter(run / "tensorboard") as writer:
        for step, loss, acc_norm in ((10, 9.5, 0.22), (20, 8.75, 0.27), (30, 8.0, 0.3)):
            writer.add_scalar("val/loss", loss, step)
            writer.add_scalar("hellaswag/acc_norm", acc_norm, step)
    return folder


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token anywhere: not in the environment, no stored login."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def push_to_hub(*argv) -> int:
    return push_command.main([str(a) for a in argv])


# ---------------------------------------------------------------------------------------------- the pushed folder


def test_pushed_folders_load_without_minigpt_hf_plain_and_sharded(tmp_path, model, checkpoint, offline_env):
    """Only the files a push sends, copied to a new folder, load in a fresh process through the Auto classes and
    the pipeline; a sharded save (index + shards) gives the same logits."""
    sharded = save_model_folder(model, tmp_path / "sharded", max_shard_size="200KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    assert make_model_card(sharded, {}).count("3,323,648") == make_model_card(checkpoint, {}).count("3,323,648") == 1

    pushed = []
    for folder in (checkpoint, sharded):
        write_model_card(folder, INFO)
        target = tmp_path / "pushed" / folder.name
        for name, size in files_to_upload(folder):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, target / name)
            assert (target / name).stat().st_size == size
        assert not (target / "training_state").exists() and not (target / "trainer_state.json").exists()
        pushed.append(str(target))

    x = torch.arange(10)[None] * 7
    expected = model(x).logits[0, -1, :8].tolist()
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
        for folder in {pushed!r}:
            m = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
            torch.testing.assert_close(m(torch.arange(10)[None] * 7).logits[0, -1, :8].tolist(), {expected!r})
            tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
            assert tok("Hello")["input_ids"] == [15496]
            pipe = pipeline("text-generation", model=folder, trust_remote_code=True)
            assert pipe("Hello", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("Hello")
            print(type(m).__module__.split(".")[0])
        assert "minigpt_hf" not in sys.modules, "the package was imported"
        """
    )
    env = dict(offline_env, PYTHONPATH="")  # from tmp_path with the repo off sys.path: only the folder's code
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["transformers_modules"] * 2


def test_files_to_upload_is_the_model_folder_unless_training_state_is_asked(checkpoint):
    files = dict(files_to_upload(checkpoint))
    assert {"model.safetensors", "config.json", "modeling_minigpt.py", "tokenizer.json"} <= set(files)
    assert files["model.safetensors"] == (checkpoint / "model.safetensors").stat().st_size
    assert not any(name.startswith(("training_state", "trainer_state")) for name in files)
    with_state = dict(files_to_upload(checkpoint, include_training_state=True))
    assert set(with_state) - set(files) == {"training_state/optimizer.bin", "trainer_state.json"}
    (checkpoint / ".README.md.tmp").write_text("partial")
    assert ".README.md.tmp" not in dict(files_to_upload(checkpoint))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        files_to_upload(checkpoint / "training_state")


# ---------------------------------------------------------------------------------------------- the card


def test_card_metadata_parses_and_the_body_has_the_run(checkpoint):
    data = ModelCard.load(write_model_card(checkpoint, INFO)).data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["license"] == "mit"
    assert {"gpt2", "nanogpt", "minigpt", "causal-lm", "custom_code"} <= set(data["tags"])
    assert data["datasets"] == ["HuggingFaceFW/fineweb-edu"]
    (index,) = data["model-index"]
    metrics = {r["metrics"][0]["type"]: (r["dataset"]["type"], r["metrics"][0]["value"]) for r in index["results"]}
    assert metrics == {"loss": ("HuggingFaceFW/fineweb-edu", 7.25), "acc_norm": ("Rowan/hellaswag", 0.26)}
    text = (checkpoint / "README.md").read_text()
    facts = ("| Layers | 2 |", "| Attention heads | 4 |", "| Width (n_embd) | 64 |", "| Context (block_size) | 64 |",
             "| Vocabulary | 50,304 |", "| Parameters | 3,323,648 (3.3M, F32) |", "| Tokens seen | 10,240 |",
             "| max_lr | 0.0006 |", 'from_pretrained("someone/minigpt-tiny", trust_remote_code=True)',
             'pipeline("text-generation"')
    for fact in facts:
        assert fact in text, fact


def test_card_info_comes_from_the_trainer_checkpoint_and_its_run(checkpoint):
    info = card_info_from_checkpoint(checkpoint)
    assert info["step"] == 20 and info["tokens_seen"] == 20 * 512
    assert info["val_loss"] == 8.75 and info["val_loss_step"] == 20  # not step 30's, logged after this checkpoint
    assert info["hellaswag"] == {"acc_norm": pytest.approx(0.27)}
    assert info["data_source"] == EMBEDDED_SOURCE  # tiny.yaml: data_source embedded; its data_dir is gone
    assert info["hyperparameters"] == {
        "total_batch_size": 512, "max_steps": 160, "max_lr": 3e-3, "min_lr": 3e-4, "weight_decay": 0.1,
        "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_epsilon": 1e-8, "grad_clip": 1.0, "mixed_precision": "no",
        "seed": 1337, "micro_batch_size": 4, "seq_len": 128, "world_size": 1, "grad_accum_steps": 1,
        "warmup_steps": 10,
    }
    text = make_model_card(checkpoint, info)
    assert "| Validation loss (step 20) | 8.75 |" in text and "| HellaSwag acc_norm | 0.27 |" in text
    assert card_info_from_checkpoint(checkpoint.parent.parent / "no-checkpoint") == {}


def test_card_without_results_or_hub_data(checkpoint):
    data = ModelCard(make_model_card(checkpoint, {"data_source": EMBEDDED_SOURCE, "license": "apache-2.0"})).data
    data = data.to_dict()
    assert "model-index" not in data and data["license"] == "apache-2.0"
    assert "datasets" not in data  # the Hub takes dataset ids there; the embedded corpus has none
    assert EMBEDDED_SOURCE["description"] in make_model_card(checkpoint, {"data_source": EMBEDDED_SOURCE})


# ---------------------------------------------------------------------------------------------- the token


def test_redact_removes_tokens_and_keeps_the_rest(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_short")
    args = {"hub_token": "anything", "token": None, "max_tokens": 5, "out": "runs/x",
            "nested": [{"note": "a hf_short b"}], "url": f"https://user:{FAKE_TOKEN}@example.org"}
    assert redact(args) == {"hub_token": "<redacted>", "token": None, "max_tokens": 5, "out": "runs/x",
                            "nested": [{"note": "a <redacted> b"}], "url": "https://user:<redacted>@example.org"}
    assert redact("key=secret123", secrets=("secret123",)) == "key=<redacted>"


def test_the_token_is_never_written_or_printed(monkeypatch, checkpoint, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    write_model_card(checkpoint, {**INFO, "data_description": f"token {FAKE_TOKEN}"})
    assert push_to_hub(checkpoint, "--repo-id", "someone/tiny", "--dry-run", "--update-card") == 0
    before = snapshot(checkpoint)
    # a real push: HF_HUB_OFFLINE makes the Hub unreachable; the error is one line, the folder unchanged
    assert push_to_hub(checkpoint, "--repo-id", "someone/tiny", "--update-card") == 2
    out, err = capsys.readouterr()
    assert "error: could not create someone/tiny" in err and "HF_HUB_OFFLINE" in err and len(err.splitlines()) == 1
    assert snapshot(checkpoint) == before
    assert FAKE_TOKEN not in out + err
    assert not [p for p in checkpoint.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]


# ---------------------------------------------------------------------------------------------- the script


def test_dry_run_lists_files_and_sizes_and_writes_nothing(checkpoint, capsys):
    before = snapshot(checkpoint)
    assert push_to_hub(checkpoint, "--repo-id", "someone/tiny", "--dry-run") == 0
    listing, card = capsys.readouterr().out.split(f"README.md would be written to {checkpoint / 'README.md'}:\n")
    sizes = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in listing.splitlines()[1:-1]}
    assert sizes == {**dict(files_to_upload(checkpoint)), "README.md": len(card[:-1].encode())}
    assert "library_name: transformers" in card
    assert snapshot(checkpoint) == before

    assert push_to_hub(checkpoint, "--repo-id", "someone/tiny", "--dry-run", "--include-training-state") == 0
    out = capsys.readouterr().out
    assert "training_state/optimizer.bin " in out and "trainer_state.json " in out
    assert snapshot(checkpoint) == before


def test_missing_token_is_one_clear_line_and_the_folder_is_untouched(tmp_path, checkpoint, offline_env):
    before = snapshot(checkpoint)
    env = {k: v for k, v in offline_env.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env["HF_HOME"] = str(tmp_path / "hf_home")  # no stored login
    res = subprocess.run([sys.executable, "-m", "minigpt_hf", "push", str(checkpoint), "--repo-id", "someone/tiny"],
                         env=env, capture_output=True, text=True)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "error: no Hugging Face token: set HF_TOKEN or run `hf auth login` with a token that has write access"
    ]
    assert snapshot(checkpoint) == before


# ---------------------------------------------------------------------------------------------- the trainer's pusher


class RecordingApi(HfApi):
    """An HfApi whose create_repo / upload_folder record their calls instead of touching the network."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        url = f"https://huggingface.co/{kwargs['repo_id']}/commit/{len(self.calls):040d}"
        return CommitInfo(commit_url=url, commit_message=kwargs["commit_message"], commit_description="", oid="0" * 40)


def test_pusher_uploads_exactly_files_to_upload_in_the_background(monkeypatch, checkpoint):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = RecordingApi()
    pusher = HubPusher("someone/tiny", private=True, api=api)
    before = snapshot(checkpoint)
    assert pusher.push(checkpoint, "step 20") is not None
    assert pusher.push(checkpoint, "step 20 again") is not None
    assert pusher.wait() == [] and len(pusher.commits) == 2
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder", "upload_folder"]
    assert api.calls[0][2] == {"token": FAKE_TOKEN, "private": True, "exist_ok": True}
    every_file = [p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()]
    for _, _, kwargs in api.calls[1:]:
        uploaded = sorted(filter_repo_objects(every_file, ignore_patterns=kwargs["ignore_patterns"]))
        assert uploaded == [name for name, _ in files_to_upload(checkpoint)] and "README.md" in uploaded
    assert api.calls[2][2]["commit_message"] == "step 20 again"
    card = (checkpoint / "README.md").read_text()  # written by the first push, from the checkpoint and its run
    assert 'from_pretrained("someone/tiny", trust_remote_code=True)' in card and "| Validation loss (step 20) |" in card
    after = snapshot(checkpoint)
    assert after.pop("README.md") and after == before  # the card was added; nothing else changed


def test_pusher_reports_an_unreachable_hub_without_raising(monkeypatch, checkpoint):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    before = snapshot(checkpoint)
    pusher = HubPusher("someone/tiny")  # HF_HUB_OFFLINE=1 (conftest): every Hub call fails at once
    assert pusher.push(checkpoint, "step 20") is not None
    (error,) = pusher.wait(timeout=60)
    assert "could not create someone/tiny" in error and "push it later: minigpt push" in error
    assert FAKE_TOKEN not in error
    after = snapshot(checkpoint)
    assert after.pop("README.md") and after == before


def test_pusher_without_a_token_reports_and_push_folder_raises(no_token, checkpoint):
    before = snapshot(checkpoint)
    pusher = HubPusher("someone/tiny", api=RecordingApi())
    assert pusher.push(checkpoint, card_info=INFO) is None
    (error,) = pusher.wait()
    assert "no Hugging Face token" in error and pusher._api.calls == []
    with pytest.raises(HubError, match="no Hugging Face token"):
        push_folder(checkpoint, "someone/tiny", api=RecordingApi(), card_info=INFO)
    assert snapshot(checkpoint) == before
    with pytest.raises(ValueError):
        HubPusher("not a repo id!")


def test_push_with_a_gpt2_copy_uploads_the_plain_export_to_gpt2(monkeypatch, checkpoint):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = RecordingApi()
    uploaded = {}
    real_upload = api.upload_folder

    def upload_folder(**kwargs):  # the export is a temporary folder: look at it while it exists
        folder = Path(kwargs["folder_path"])
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        uploaded[kwargs.get("path_in_repo")] = sorted(filter_repo_objects(names,
                                                                          ignore_patterns=kwargs["ignore_patterns"]))
        if kwargs.get("path_in_repo") == "gpt2":
            uploaded["config"] = json.loads((folder / "config.json").read_text())
        return real_upload(**kwargs)

    api.upload_folder = upload_folder
    pusher = HubPusher("someone/tiny", api=api, gpt2_copy=True)
    assert pusher.push(checkpoint, "step 20") is not None
    assert pusher.wait() == []
    assert "model.safetensors" in uploaded[None] and "modeling_minigpt.py" in uploaded[None]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(uploaded["gpt2"])
    assert not any(name.endswith(".py") for name in uploaded["gpt2"])
    assert uploaded["config"]["model_type"] == "gpt2" and uploaded["config"]["vocab_size"] == 50257
    assert 'subfolder="gpt2"' in (checkpoint / "README.md").read_text()
