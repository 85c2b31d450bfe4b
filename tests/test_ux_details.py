"""Small things a careful user notices: the loss-surface figure, the model card's metadata and budget, help texts, and
CLI errors free of Python-API asides."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from minigpt_hf import MiniGPTConfig, MiniGPTForCausalLM
from minigpt_hf.checkpoint import save_model_folder
from minigpt_hf.data import EMBEDDED_SOURCE
from minigpt_hf.landscape import surface_figure
from minigpt_hf.model_card import make_model_card

PACKAGE = Path(__file__).parents[1] / "minigpt_hf"


# ---------------------------------------------------------------------------------------------- the loss surface


@pytest.fixture(scope="module")
def bowl():
    """A landscape shaped like a real one: a bowl with its minimum at the trained weights (0, 0)."""
    coords = np.linspace(-1, 1, 21)
    a, b = np.meshgrid(coords, coords, indexing="ij")
    losses = 5 + 3 * a**2 + 2 * b**2 + 0.5 * a * b
    return {"alphas": coords, "betas": coords.copy(), "losses": losses}, float(losses[10, 10])


@pytest.fixture(scope="module")
def surface(bowl):
    """The drawn figure and the window extent of every text as it was drawn (mplot3d places tick labels only
    while drawing, so their extents must be taken then)."""
    from matplotlib.text import Text

    fig, boxes, draw = surface_figure(*bowl), {}, Text.draw

    def recording_draw(self, renderer):
        draw(self, renderer)
        if self.get_visible() and self.get_text():
            boxes[id(self)] = self.get_window_extent(renderer)

    Text.draw = recording_draw
    try:
        fig.canvas.draw()
    finally:
        Text.draw = draw
    fig.text_boxes = boxes
    return fig


def test_surface_marker_is_drawn_over_the_surface(surface, bowl):
    from mpl_toolkits.mplot3d import proj3d

    ax = surface.axes[0]
    x, y, _ = proj3d.proj_transform(0.0, 0.0, bowl[1], ax.get_proj())
    column, row = ax.transData.transform((x, y))
    image = np.asarray(surface.canvas.buffer_rgba())[..., :3].astype(int)
    r, c = image.shape[0] - int(round(row)), int(round(column))
    patch = image[r - 2 : r + 3, c - 2 : c + 3].reshape(-1, 3)
    red = (patch[:, 0] > 200) & (patch[:, 1] < 80) & (patch[:, 2] < 80)
    assert red.mean() > 0.5, f"the final-loss marker is hidden: pixels {patch[:3].tolist()} at its place"


def test_surface_is_opaque(surface):
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    (poly,) = [c for c in surface.axes[0].collections if isinstance(c, Poly3DCollection)]
    assert np.all(poly.get_facecolor()[:, 3] == 1.0)  # a translucent surface shows its far corner through the front


def test_axis_labels_clear_their_tick_labels(surface):
    ax, boxes = surface.axes[0], surface.text_boxes
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        label = boxes[id(axis.label)]
        ticks = [t.label1 for t in axis.get_major_ticks() if id(t.label1) in boxes]
        assert ticks, "no tick label was drawn"
        for tick in ticks:
            assert not label.overlaps(boxes[id(tick)]), (axis.label.get_text(), tick.get_text())


# ---------------------------------------------------------------------------------------------- the model card


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = MiniGPTForCausalLM(MiniGPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64))
    return save_model_folder(model, tmp_path_factory.mktemp("card") / "model")


@pytest.mark.parametrize("source, ids", [
    (EMBEDDED_SOURCE, None),  # no Hub dataset: no ids (the body still says what it was)
    ({"type": "local", "paths": ["notes/"]}, None),
    ({"type": "dataset", "name": "HuggingFaceFW/fineweb-edu", "config": "sample-10BT"}, ["HuggingFaceFW/fineweb-edu"]),
    ({"type": "dataset", "name": "/data/my builder/"}, None),  # a local builder folder is no id
])
def test_card_datasets_metadata_holds_only_dataset_ids(tiny_folder, source, ids):
    text = make_model_card(tiny_folder, {"data_source": source})
    assert ModelCard(text).data.to_dict().get("datasets") == ids


def test_card_limitations_cite_the_budget_of_this_model_size(tiny_folder):
    text = make_model_card(tiny_folder, {})
    n = 3_323_648  # the parameters stored in the folder, as the card's table counts them
    assert f"| Parameters | {n:,} (3.3M, F32) |" in text
    limitations = text.split("## Limitations", 1)[1]
    assert "3.3M parameters is about 66M tokens" in limitations and "124M" not in limitations  # 20 x N


# ---------------------------------------------------------------------------------------------- help and errors


def test_push_help_names_the_command_not_the_old_script(capsys):
    from minigpt_hf.commands import push

    with pytest.raises(SystemExit):
        push.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "scripts/eval_hellaswag.py" not in out and "minigpt eval-hellaswag --output" in out


def _raise_messages():
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Raise) and node.exc is not None:
                yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", ast.get_source_segment(source, node)


def test_error_messages_carry_no_python_api_asides():
    """A CLI error names flags; "(overwrite=True)" and the like speak to Python callers, who have the signature."""
    aside = re.compile(r"\(\s*[a-z_]+=(True|False|None)\s*\)")
    found = [where for where, text in _raise_messages() if aside.search(text)]
    assert found == []


def test_export_over_an_existing_folder_says_only_the_flag(tmp_path, tiny_folder, capsys):
    from minigpt_hf.commands import export

    (tmp_path / "taken").mkdir()
    assert export.main([str(tiny_folder), str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--overwrite" in err and "=True" not in err
