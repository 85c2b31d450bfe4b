"""--report_to: choosing trackers (names, all/none, missing packages), what each is built with (project, run name,
tags), and a real run logging the same metrics, config and samples to TensorBoard, W&B (offline) and MLflow (a local
file store), each read back; `minigpt plot` without TensorBoard says so."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.tracking import LOGGER_TYPE_TO_CLASS
from accelerate.utils import LoggerType

from helpers import ROOT
from minigpt_hf import trackers
from minigpt_hf.commands import plot as plot_command
from minigpt_hf.commands import train as train_command
from minigpt_hf.trackers import build_trackers, resolve_report_to
from minigpt_hf.training import parse_args
from test_training import run_error, scalars, small_run

TAGS = ("val/loss", "val/bpb", "train/loss", "train/lr", "train/grad_norm")


# ---------------------------------------------------------------------------------------------- choosing trackers


def test_every_tracker_accelerate_drives_can_be_chosen():
    assert set(trackers.TRACKERS) == {t.value for t in LoggerType} - {"all"}
    assert set(trackers.TRACKERS) <= set(LOGGER_TYPE_TO_CLASS)


def test_report_to_names_all_and_none(monkeypatch):
    monkeypatch.setattr(trackers, "is_installed", lambda name: name in ("tensorboard", "wandb", "mlflow"))
    assert resolve_report_to("tensorboard") == ["tensorboard"]
    assert resolve_report_to(" WandB, mlflow,wandb ") == ["wandb", "mlflow"]  # case, spaces, repeats
    assert resolve_report_to(["mlflow", "tensorboard"]) == ["mlflow", "tensorboard"]  # a YAML list
    assert resolve_report_to("all") == ["tensorboard", "wandb", "mlflow"]  # every installed one
    assert resolve_report_to("none") == resolve_report_to("") == []
    args = parse_args(["--report_to", "wandb,tensorboard", "--tags", "a, b ,c"])[2]
    assert (args.report_to, args.tags) == ("wandb,tensorboard", "a,b,c")
    assert parse_args([])[2].report_to == "tensorboard"  # the default


@pytest.mark.parametrize("value, message", [
    ("wandbb", "--report_to wandbb: unknown tracker; did you mean wandb? choose from tensorboard, wandb, mlflow"),
    ("tensorbaord", "did you mean tensorboard?"),
    ("none,wandb", "'none' cannot be combined"),
    ("comet_ml", "the comet-ml package is not installed; pip install comet-ml"),
    ("mlflow", "the mlflow package is not installed; pip install 'minigpt-hf[trackers]'"),
])
def test_report_to_errors_name_the_fix(monkeypatch, value, message):
    monkeypatch.setattr(trackers, "is_installed", lambda name: name in ("tensorboard", "wandb"))
    with pytest.raises(ValueError) as err:
        resolve_report_to(value)
    assert message in str(err.value)


def test_cli_report_to_error_is_one_line(tmp_path, capsys):
    err = run_error(["--report_to", "wandbb", "--output_dir", str(tmp_path / "out")], capsys)
    assert "did you mean wandb?" in err and not (tmp_path / "out").exists()


def test_each_tracker_gets_the_project_run_name_and_tags(monkeypatch, tmp_path):
    """What Accelerate's tracker classes receive (and pass to their package's init); nothing is started here."""
    monkeypatch.setattr(trackers, "is_installed", lambda name: True)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = tmp_path / "my-run"
    built = {t.name: t for t in build_trackers("all", out, "proj", None, "a,stage=b")}
    assert set(built) == set(trackers.TRACKERS)
    assert built["tensorboard"].run_name == "tensorboard" and built["tensorboard"].logging_dir_param == str(out)
    assert built["wandb"].run_name == "proj"  # wandb.init(project=...)
    assert built["wandb"].init_kwargs == {"name": "my-run", "tags": ["a", "stage=b"], "dir": str(out)}
    mlflow = built["mlflow"]
    assert (mlflow.experiment_name, mlflow.run_name, mlflow.tags) == ("proj", "my-run", {"a": "", "stage": "b"})
    assert built["clearml"].init_kwargs == {"project_name": "proj", "task_name": "my-run", "tags": ["a", "stage=b"]}
    assert built["aim"].run_name == "my-run" and built["aim"].init_kwargs == {"experiment": "proj"}
    assert built["trackio"].run_name == "proj" and built["trackio"].init_kwargs == {"name": "my-run"}
    assert built["swanlab"].init_kwargs == {"experiment_name": "my-run"}
    assert built["comet_ml"].run_name == "proj"
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    (wandb,) = build_trackers("wandb", out, "proj", "named")
    assert wandb.run_name == "from-env" and wandb.init_kwargs["name"] == "named"  # WANDB_PROJECT wins
    assert build_trackers("none", out, "proj") is None


# ---------------------------------------------------------------------------------------------- a real run


def wandb_records(path):
    """The records of a W&B run file (``run-ID.wandb``), parsed with wandb's own protobuf ``Record``. The file is
    W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks (crc32, length, type: full/first/middle/
    last). wandb 0.2x+ ships no Python reader for it (only wandb-core's), so the framing is read here."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, payload = Path(path).read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", path
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            yield record


def read_wandb_run(run_dir: Path) -> dict:
    """History ({tag: {step: value}}), config, name and tags of the one offline W&B run under ``run_dir``."""
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    run = {"history": {}, "config": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for key, value in items.items():
                run["history"].setdefault(key, {})[items["_step"]] = value
        elif kind == "config":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "run":
            run.update(name=record.run.display_name, tags=list(record.run.tags), project=record.run.project)
    run["files"] = path.parent / "files"
    return run


@pytest.mark.slow
def test_same_metrics_config_and_samples_reach_tensorboard_wandb_and_mlflow(shakespeare, tmp_path, offline_env,
                                                                          monkeypatch):
    pytest.importorskip("wandb", reason="the dev extra installs wandb")
    pytest.importorskip("mlflow", reason="the dev extra installs mlflow-skinny")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file: store unless asked
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")

    out, store = tmp_path / "run", f"file://{tmp_path / 'mlruns'}"
    env = dict(offline_env, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
               MLFLOW_TRACKING_URI=store, MLFLOW_ALLOW_FILE_STORE="true", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true")
    env.pop("WANDB_PROJECT", None), env.pop("MLFLOW_EXPERIMENT_NAME", None)
    argv = small_run(shakespeare, out, "--sample_every", "2", "--report_to", "tensorboard,wandb,mlflow",
                     "--run_name", "smoke", "--tags", "tiny,stage=test")
    proc = subprocess.run([sys.executable, "-m", "minigpt_hf", "train", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dropped this attribute" not in proc.stderr  # no text was sent to a tracker that takes numbers only

    tensorboard = {tag: scalars(out, tag) for tag in TAGS}
    wandb_run = read_wandb_run(out)
    client = MlflowClient(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "minigpt_hf"]
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    run_id = mlflow_run.info.run_id
    for tag in TAGS:  # the same steps and values everywhere
        expected = tensorboard[tag]
        assert set(expected) == ({0, 2, 4} if tag.startswith("val/") else {0, 1, 2, 3})
        assert wandb_run["history"][tag] == pytest.approx(expected, rel=1e-6)
        history = {m.step: m.value for m in client.get_metric_history(run_id, tag)}
        assert history == pytest.approx(expected, rel=1e-6)

    # the arguments as each tracker's config / hyper-parameters
    (hparams,) = (out / "tensorboard").glob("*/hparams.yml")
    assert yaml.safe_load(hparams.read_text())["max_steps"] == 4
    assert wandb_run["config"]["max_steps"] == 4 and wandb_run["config"]["report_to"] == "tensorboard,wandb,mlflow"
    assert mlflow_run.data.params["max_steps"] == "4" and mlflow_run.data.params["tags"] == "tiny,stage=test"

    # the run's name, project and tags
    assert (wandb_run["name"], wandb_run["project"], wandb_run["tags"]) == ("smoke", "minigpt_hf", ["tiny", "stage=test"])
    assert mlflow_run.info.run_name == "smoke" and mlflow_run.info.status == "FINISHED"
    assert {k: v for k, v in mlflow_run.data.tags.items() if not k.startswith("mlflow.")} == {"tiny": "", "stage": "test"}

    # the samples as text: a W&B table and an MLflow artifact per sampling step, the text of log.txt
    last_sample = [line for line in (out / "log.txt").read_text().splitlines() if "sample 3:" in line][-1]
    text = last_sample.split("sample 3: ", 1)[1]
    (table,) = wandb_run["files"].glob("media/table/samples_4_*.table.json")
    assert json.loads(table.read_text())["data"][3] == [4, text]
    artifacts = [a.path for a in client.list_artifacts(run_id, "samples")]
    assert artifacts == ["samples/step_000000.txt", "samples/step_000002.txt", "samples/step_000004.txt"]
    assert text in Path(client.download_artifacts(run_id, "samples/step_000004.txt", str(tmp_path))).read_text()
    assert plot_command.main([str(out), "--out", str(tmp_path / "figures")]) == 0  # tensorboard was among them
    assert (tmp_path / "figures" / "fig1_loss.png").is_file()


def test_report_to_none_writes_no_tracker_and_plot_says_why(shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_command.main(small_run(shakespeare, out, "--report_to", "none")) == 0
    assert not (out / "tensorboard").exists() and "step 4 | val " in (out / "log.txt").read_text()
    capsys.readouterr()
    assert plot_command.main([str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no TensorBoard event files" in err
    assert "--report_to none" in err and "tensorboard among the trackers" in err


def test_plot_of_a_run_that_logged_elsewhere_names_its_trackers(tmp_path, capsys):
    from minigpt_hf.checkpoint import checkpoint_path, mark_complete, write_trainer_state

    folder = checkpoint_path(tmp_path / "run", 4)
    folder.mkdir(parents=True)
    write_trainer_state(folder, {"step": 4, "args": {"train": {"report_to": "wandb,mlflow"}}})
    mark_complete(folder)
    assert plot_command.main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "logged to wandb,mlflow only (--report_to wandb,mlflow)" in err and "view the curves in wandb,mlflow" in err


def test_a_tracker_that_cannot_start_is_one_line_naming_it():
    """MLflow 3 refuses some stores, W&B wants a login: the run says which tracker and what to set, no traceback."""
    from types import SimpleNamespace

    from minigpt_hf.trackers import start_trackers

    class StoreRefused(Exception):
        __module__ = "mlflow.exceptions"

    class Accelerator:
        log_with = [SimpleNamespace(name="tensorboard"), SimpleNamespace(name="mlflow")]

        def init_trackers(self, project, config=None):
            raise StoreRefused("unsupported URI 'sqlite:///x.db'\nmore detail")

    with pytest.raises(ValueError) as info:
        start_trackers(Accelerator(), "p", {})
    message = str(info.value)
    assert message.startswith("--report_to mlflow: the tracker did not start (StoreRefused: unsupported URI")
    assert "MLFLOW_TRACKING_URI" in message and "\n" not in message
