"""Experiment trackers for the trainer: ``--report_to`` picks any of the trackers Accelerate drives (TensorBoard, W&B,
MLflow, Comet, Aim, ClearML, DVCLive, SwanLab, Trackio), each built with the run's project, name and tags.

The trainer logs the same metrics to every tracker through ``accelerator.log`` (numbers only), the arguments as each
tracker's config / hyper-parameters through ``accelerator.init_trackers``, and the samples as text only where the
tracker takes text (:func:`log_samples`). TensorBoard writes into ``OUTPUT_DIR/tensorboard``, where ``minigpt plot``
and the model card read it.

Nothing here imports torch, accelerate or a tracker at import time: ``arguments.py`` validates ``--report_to`` with
:func:`resolve_report_to` before anything heavy is loaded.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

from .checkpoint import TENSORBOARD_DIR

# Accelerate's tracker names (accelerate.utils.LoggerType) -> (the module the tracker imports, its pip package)
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
    "comet_ml": ("comet_ml", "comet-ml"),
    "aim": ("aim", "aim"),
    "clearml": ("clearml", "clearml"),
    "dvclive": ("dvclive", "dvclive"),
    "swanlab": ("swanlab", "swanlab"),
    "trackio": ("trackio", "trackio"),
}
EXTRA = {"wandb", "mlflow"}  # the ones pyproject's [trackers] extra installs


def is_installed(name: str) -> bool:
    return importlib.util.find_spec(TRACKERS[name][0]) is not None


def _names(value) -> list[str]:
    """``"wandb, mlflow"`` or a YAML list as a list of lower-case names."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip().lower() for item in items if str(item).strip()]


def resolve_report_to(value) -> list[str]:
    """The trackers ``--report_to`` names, in order and without repeats: ``all`` is every installed one, ``none``
    (or nothing) none. A ValueError names an unknown tracker (with the closest one) or a missing package (with its
    pip install)."""
    names = _names(value)
    if names in ([], ["none"]):
        return []
    if "none" in names:
        raise ValueError(f"--report_to {','.join(names)}: 'none' cannot be combined with trackers; pass one or the "
                         "other")
    if "all" in names:
        names = [name for name in TRACKERS if is_installed(name)]
    resolved = []
    for name in names:
        if name not in TRACKERS:
            close = difflib.get_close_matches(name, [*TRACKERS, "all", "none"], n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ValueError(f"--report_to {name}: unknown tracker; {hint}choose from {', '.join(TRACKERS)}, all or "
                             "none (comma-separated for several)")
        if not is_installed(name):
            package = TRACKERS[name][1]
            how = "pip install 'minigpt-hf[trackers]'" if name in EXTRA else f"pip install {package}"
            raise ValueError(f"--report_to {name}: the {package} package is not installed; {how}, or leave {name} "
                             "out of --report_to")
        if name not in resolved:
            resolved.append(name)
    return resolved


def parse_tags(value) -> list[str]:
    """``"a, b"`` or a YAML list as a list of tags."""
    return [str(item).strip() for item in (value if isinstance(value, (list, tuple)) else str(value or "").split(","))
            if str(item).strip()]


def _init_args(name: str, output_dir: str, project: str, run_name: str, tags: list[str]) -> tuple[str, dict]:
    """The first argument of the Accelerate tracker class ``name`` and its keyword arguments (what it passes to the
    tracker's own ``init``): the project, the run's name and tags, where that tracker takes them."""
    if name == "tensorboard":  # the first argument is the folder under the logging dir
        return TENSORBOARD_DIR, {}
    if name == "wandb":  # wandb.init(project=first, ...); WANDB_PROJECT wins, as in HF Trainer
        return os.environ.get("WANDB_PROJECT", project), {"name": run_name, "tags": tags, "dir": output_dir}
    if name == "mlflow":  # the experiment (MLFLOW_EXPERIMENT_NAME wins: Accelerate's rule); tags: key=value or key
        return project, {"run_name": run_name,
                         "tags": dict(tag.split("=", 1) if "=" in tag else (tag, "") for tag in tags) or None}
    if name == "clearml":
        return run_name, {"project_name": project, "task_name": run_name, "tags": tags or None}
    if name == "aim":  # the first argument names the run; the repository is the output folder
        return run_name, {"experiment": project}
    if name == "dvclive":
        return run_name, {"dir": str(Path(output_dir) / "dvclive")}
    if name == "swanlab":
        return project, {"experiment_name": run_name}
    if name == "trackio":
        return project, {"name": run_name}
    return project, {}  # comet_ml: the project


def build_trackers(report_to, output_dir, project: str, run_name: str | None = None, tags=None) -> list | None:
    """Accelerate tracker objects for ``report_to`` (see :func:`resolve_report_to`), ready for
    ``Accelerator(log_with=...)``, or None for none; ``run_name`` defaults to the output folder's name and ``tags``
    may be a comma-separated string. Nothing starts before ``accelerator.init_trackers`` (main process only)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    run_name = run_name or Path(output_dir).resolve().name
    trackers = []
    for name in resolve_report_to(report_to):
        tracker_class = LOGGER_TYPE_TO_CLASS[name]
        first, kwargs = _init_args(name, str(output_dir), project, run_name, parse_tags(tags))
        directory = (str(output_dir),) if tracker_class.requires_logging_directory else ()
        trackers.append(tracker_class(first, *directory, **kwargs))
    return trackers or None


HINTS = {"mlflow": "set MLFLOW_TRACKING_URI (an MLflow server, or sqlite:///mlflow.db with the full mlflow package)",
         "wandb": "run wandb login, or set WANDB_MODE=offline"}


def start_trackers(accelerator, project: str, config: dict) -> None:
    """``accelerator.init_trackers``; a tracker that cannot start (no login, a store it refuses) is one ValueError
    naming it and what to do, not a traceback from inside its package."""
    try:
        accelerator.init_trackers(project, config=config)
    except Exception as err:
        package = type(err).__module__.split(".")[0]
        name = next((t.name for t in accelerator.log_with if t.name.split("_")[0] == package.split("_")[0]), package)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = HINTS.get(name, f"fix its setup or leave {name} out of --report_to")
        raise ValueError(f"--report_to {name}: the tracker did not start ({type(err).__name__}: {reason}); {hint}") from err


def log_samples(accelerator, samples: list[str], step: int) -> None:
    """The samples as text where a tracker takes text: TensorBoard's text tab, a W&B table, an MLflow text artifact
    (``samples/step_NNNNNN.txt``). The other trackers take numbers only, so they get none (log.txt has them)."""
    if not accelerator.is_main_process:
        return
    text = "\n\n".join(f"    {sample}" for sample in samples)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_text("samples", text, global_step=step)
            tracker.writer.flush()
        elif tracker.name == "wandb":
            tracker.log_table("samples", columns=["step", "sample"], data=[[step, s] for s in samples], step=step)
        elif tracker.name == "mlflow":
            import mlflow

            mlflow.log_text(text, f"samples/step_{step:06d}.txt")
