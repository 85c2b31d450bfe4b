"""The notes' training figures, drawn from a run's TensorBoard event files.

* Figure 1 -- train and validation loss vs optimizer step (``train/loss``, ``val/loss``);
* Figure 2 -- learning-rate schedule with its warmup (``train/lr``);
* Figure 7 -- HellaSwag acc_norm vs step (``hellaswag/acc_norm``) against GPT-2 124M (0.2955) and chance (0.25).

Event files are read with TensorBoard's own ``EventAccumulator``; figures are drawn on matplotlib's Agg canvas
without touching pyplot's global state. Each ``plot_*`` function returns the ``Figure`` it saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .checkpoint import read_scalars
from .evaluation.hellaswag import CHANCE, GPT2_124M_HELLASWAG


def new_figure(figsize=(8, 5), **subplot_kw):
    """A ``(Figure, Axes)`` pair on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(**subplot_kw)


def _finish(fig, ax, title: str, ylabel: str, path) -> None:
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def plot_loss(scalars: dict, path):
    """Figure 1: ``train/loss`` and ``val/loss`` (whichever are logged) vs step."""
    fig, ax = new_figure()
    for tag, label, style in (("train/loss", "train", "-"), ("val/loss", "val", "o-")):
        if tag in scalars:
            ax.plot(*scalars[tag], style, label=label, markersize=3)
    _finish(fig, ax, "Figure 1: train / val loss", "loss", path)
    return fig


def plot_lr(scalars: dict, path):
    """Figure 2: ``train/lr`` vs step, with the end of warmup (the peak learning rate) marked."""
    fig, ax = new_figure()
    steps, lrs = scalars["train/lr"]
    ax.plot(steps, lrs, label="learning rate")
    peak = int(steps[np.argmax(lrs)])
    ax.axvline(peak, color="gray", linestyle=":", label=f"warmup ends (step {peak})")
    _finish(fig, ax, "Figure 2: learning-rate schedule", "learning rate", path)
    return fig


def plot_hellaswag(scalars: dict, path):
    """Figure 7: ``hellaswag/acc_norm`` vs step, with the GPT-2 124M baseline and the 25 % chance level."""
    fig, ax = new_figure()
    ax.plot(*scalars["hellaswag/acc_norm"], "o-", label="acc_norm", markersize=3)
    ax.axhline(GPT2_124M_HELLASWAG, color="tab:red", linestyle="--", label=f"GPT-2 124M ({GPT2_124M_HELLASWAG})")
    ax.axhline(CHANCE, color="gray", linestyle=":", label=f"chance ({CHANCE})")
    _finish(fig, ax, "Figure 7: HellaSwag", "accuracy (acc_norm)", path)
    return fig


FIGURES = {  # file stem -> (plot function, tags: the figure is drawn if any of them is logged)
    "fig1_loss": (plot_loss, ("train/loss", "val/loss")),
    "fig2_lr": (plot_lr, ("train/lr",)),
    "fig7_hellaswag": (plot_hellaswag, ("hellaswag/acc_norm",)),
}


def _require_tensorboard(run_dir) -> None:
    """A clear error when a run folder has no TensorBoard events, saying which trackers its checkpoints say it used
    instead (``--report_to`` without tensorboard)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or any(p.is_file() for p in run_dir.rglob("*tfevents*")):
        return
    checkpoints, report_to = ckpt.list_checkpoints(run_dir), None
    try:
        state = json.loads((checkpoints[-1][1] / ckpt.TRAINER_STATE_NAME).read_text(encoding="utf-8"))
        report_to = state["args"]["train"]["report_to"]
    except (IndexError, OSError, ValueError, KeyError, TypeError):  # no checkpoint, or one from before --report_to
        pass
    if report_to and "tensorboard" not in report_to.split(","):
        what = "to no tracker" if report_to == "none" else f"to {report_to} only"
        elsewhere = "" if report_to == "none" else f", or view the curves in {report_to}"
        raise FileNotFoundError(
            f"{run_dir}: no TensorBoard event files: this run logged {what} (--report_to {report_to}), and the "
            "figures are drawn from TensorBoard's events; train with tensorboard among the trackers (the default, or "
            f"e.g. --report_to tensorboard,wandb){elsewhere}")
    raise FileNotFoundError(f"{run_dir}: no TensorBoard event files (*tfevents*) found; give the --output_dir of a run "
                            "trained with --report_to tensorboard (the default)")


def plot_training(run_dir, out_dir=None) -> dict[str, Path]:
    """Draw every figure whose tags are logged under ``run_dir`` into ``out_dir`` (default ``run_dir/figures``) as
    PNG; print a note for each figure skipped. Returns ``{stem: png_path}`` of the figures written."""
    _require_tensorboard(run_dir)
    scalars = read_scalars(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, (plot, tags) in FIGURES.items():
        if not any(tag in scalars for tag in tags):
            print(f"note: skipping {stem}.png: no {' or '.join(tags)} scalars under {run_dir}")
            continue
        written[stem] = out_dir / f"{stem}.png"
        plot(scalars, written[stem])
    return written
