"""The notes' training figures, drawn from a run's TensorBoard event files.

* Figure 1 -- train and validation loss vs optimizer step (``train/loss``, ``val/loss``);
* Figure 2 -- learning-rate schedule with its warmup (``train/lr``);
* Figure 7 -- HellaSwag acc_norm vs step (``hellaswag/acc_norm``) against GPT-2 124M (0.2955) and chance (0.25).

Event files are read with TensorBoard's own ``EventAccumulator``; figures are drawn on matplotlib's Agg canvas
without touching pyplot's global state. Each ``plot_*`` function returns the ``Figure`` it saved.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

GPT2_124M_HELLASWAG = 0.2955
CHANCE = 0.25


def read_scalars(run_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar tag in the event files under ``run_dir`` (searched recursively) as ``(steps, values)``.

    Events from all files are merged by step; where a step was logged twice (a resumed run) the later write wins.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    files = sorted(p for p in run_dir.rglob("*tfevents*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{run_dir}: no TensorBoard event files (*tfevents*) found")
    events = defaultdict(list)
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={SCALARS: 0})  # 0 = keep every event
        accumulator.Reload()
        for tag in accumulator.Tags()[SCALARS]:
            events[tag] += [(e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag)]
    scalars = {}
    for tag, rows in events.items():
        by_step = {step: value for _, step, value in sorted(rows)}
        steps = np.array(sorted(by_step))
        scalars[tag] = (steps, np.array([by_step[s] for s in steps]))
    return scalars


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


def plot_training(run_dir, out_dir=None) -> dict[str, Path]:
    """Draw every figure whose tags are logged under ``run_dir`` into ``out_dir`` (default ``run_dir/figures``) as
    PNG; print a note for each figure skipped. Returns ``{stem: png_path}`` of the figures written."""
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
