"""The notes' Figure 6: the loss surface around trained weights (Li et al., 2018, "Visualizing the Loss Landscape of
Neural Nets").

The loss is evaluated on a fixed batch at ``theta + alpha * delta + beta * eta`` over a square grid of ``(alpha,
beta)``, where ``delta`` and ``eta`` are Gaussian directions, *filter-normalised*: each row (output unit of a
``Linear``, token of an embedding: the first dimension of every matrix) is rescaled to the norm of the same row of
the weight. Biases and LayerNorm parameters (all 1-D tensors) are zero in both directions, Li et al.'s
"ignore biasbn" choice, so they keep their trained values. The weights are restored exactly afterwards.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .evaluation.loss import token_losses
from .plotting import new_figure


def filter_normalized_direction(params: dict[str, torch.Tensor], generator: torch.Generator) -> dict:
    """A random direction for the matrices in ``params`` with each row scaled to the matching weight row's norm."""
    direction = {}
    for name, weight in params.items():
        noise = torch.randn(weight.shape, generator=generator).to(weight)
        rows, noise_rows = weight.detach().flatten(1), noise.flatten(1)
        scale = rows.norm(dim=1, keepdim=True) / noise_rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        direction[name] = (noise_rows * scale).view_as(weight)
    return direction


@torch.no_grad()
def batch_loss(model, windows: torch.Tensor) -> float:
    """Mean next-token loss of ``model`` on a ``(B, T + 1)`` batch of token windows."""
    return token_losses(model, windows).mean().item()


@torch.no_grad()
def loss_landscape(model, windows: torch.Tensor, grid: int = 21, span: float = 1.0, seed: int = 0, progress=True):
    """Loss on ``windows`` over a ``grid x grid`` plane of ``alpha, beta`` in ``[-span, span]`` around the weights.

    ``grid`` must be odd so that ``alpha = beta = 0`` (the trained weights) is a grid point. Returns
    ``{"alphas", "betas", "losses"}`` with ``losses[i, j]`` at ``(alphas[i], betas[j])``.
    """
    if grid < 3 or grid % 2 == 0:
        raise ValueError(f"grid must be odd and >= 3 so the trained weights are a grid point, got {grid}")
    params = {name: p for name, p in model.named_parameters() if p.dim() > 1}
    generator = torch.Generator().manual_seed(seed)
    delta = filter_normalized_direction(params, generator)
    eta = filter_normalized_direction(params, generator)
    original = {name: p.detach().clone() for name, p in params.items()}
    coords = span * np.arange(-(grid // 2), grid // 2 + 1) / (grid // 2)  # exactly 0.0 in the middle
    losses = np.empty((grid, grid))
    was_training = model.training
    model.eval()
    try:
        cells = product(enumerate(coords), enumerate(coords))
        for (i, alpha), (j, beta) in tqdm(cells, total=grid * grid, desc="loss landscape", disable=not progress):
            for name, p in params.items():
                p.copy_(original[name] + float(alpha) * delta[name] + float(beta) * eta[name])
            losses[i, j] = batch_loss(model, windows)
    finally:
        for name, p in params.items():
            p.copy_(original[name])
        model.train(was_training)
    return {"alphas": coords, "betas": coords.copy(), "losses": losses}


def plot_landscape(result: dict, final_loss: float, out_dir) -> dict[str, Path]:
    """Contour and 3-D surface PNGs of a :func:`loss_landscape` result, the trained weights' loss marked at (0, 0),
    plus ``landscape.npz`` with alphas, betas and losses. Returns the three paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("landscape.npz", "landscape_contour.png", "landscape_surface.png")}
    np.savez(paths["landscape.npz"], **result)
    a, b = np.meshgrid(result["alphas"], result["betas"], indexing="ij")
    label = f"final loss {final_loss:.4f}"

    fig, ax = new_figure()
    filled = ax.contourf(a, b, result["losses"], levels=30, cmap="viridis")
    ax.contour(a, b, result["losses"], levels=15, colors="k", linewidths=0.4)
    fig.colorbar(filled, ax=ax, label="loss")
    ax.plot([0], [0], "r*", markersize=14, label=label)
    ax.set(title="Figure 6: loss landscape (filter-normalised directions)", xlabel="alpha", ylabel="beta")
    ax.legend()
    fig.savefig(paths["landscape_contour.png"])

    surface_figure(result, final_loss).savefig(paths["landscape_surface.png"])
    return paths


def surface_figure(result: dict, final_loss: float):
    """The 3-D surface of a :func:`loss_landscape` result with the trained weights' loss marked at (0, 0).

    The surface is opaque (a translucent one shows its far corner through the front), and artists are drawn in their
    zorder rather than by mplot3d's depth sort, which put the marker at the minimum under the surface.
    """
    from matplotlib.ticker import MaxNLocator

    a, b = np.meshgrid(result["alphas"], result["betas"], indexing="ij")
    fig, ax = new_figure(figsize=(8, 7), projection="3d", computed_zorder=False)
    ax.plot_surface(a, b, result["losses"], cmap="viridis", rstride=1, cstride=1, linewidth=0, antialiased=False,
                    zorder=1)
    ax.scatter([0], [0], [final_loss], color="red", edgecolor="white", s=80, depthshade=False,
               label=f"final loss {final_loss:.4f}", zorder=3)
    ax.set(title="Figure 6: loss landscape", xlabel="alpha", ylabel="beta", zlabel="loss")
    for axis in (ax.xaxis, ax.yaxis):  # five ticks, and the axis labels set off from them
        axis.set_major_locator(MaxNLocator(5))
        axis.labelpad = 10
    ax.zaxis.labelpad = 14
    ax.legend()
    return fig
