"""notebooks/train_colab_t4.ipynb runs top to bottom outside Colab in smoke mode: the tiny preset for two steps on
the embedded corpus, on CPU, offline -- data, training, curves, samples, HellaSwag, and a dry-run push."""

import json
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "train_colab_t4.ipynb"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernel spec that runs this interpreter (this venv), installed in a temporary Jupyter path."""
    from ipykernel.kernelspec import install

    install(kernel_name="minigpt-test", prefix=str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    return "minigpt-test"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_notebook_smoke_run(tmp_path, monkeypatch, kernel_name):
    import nbformat
    from nbclient import NotebookClient

    spec = tmp_path / "jupyter" / "share" / "jupyter" / "kernels" / kernel_name / "kernel.json"
    assert json.loads(spec.read_text())["argv"][0] == sys.executable
    root = tmp_path / "run"
    monkeypatch.setenv("MINIGPT_SMOKE_TEST", "1")
    monkeypatch.setenv("MINIGPT_SMOKE_STEPS", "2")
    monkeypatch.setenv("MINIGPT_RUN_ROOT", str(root))
    monkeypatch.delenv("MINIGPT_HUB_REPO_ID", raising=False)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=170, kernel_name=kernel_name, resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "IN_COLAB=False  SMOKE_TEST=True" in text
    run = root / "tiny-smoke"
    checkpoint = run / "checkpoints" / "step_000002"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "trainer_state.json").is_file()
    assert f"newest checkpoint: {checkpoint}" in text
    assert "--resume_from_checkpoint latest" in text
    assert {"fig1_loss.png", "fig2_lr.png", "fig7_hellaswag.png"} <= {p.name for p in (run / "figures").iterdir()}
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert text.count("sample ") >= 4
    assert json.loads((run / "hellaswag.json").read_text())["n"] == 4
    assert "dry run: would upload to your-name/minigpt-colab-t4" in text and "model.safetensors" in text
    assert not (checkpoint / "README.md").exists()  # the dry run wrote nothing
