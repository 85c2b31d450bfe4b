"""Loss landscape: centre = plain loss, weights restored, filter-normalised directions, files and CLI."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from minigpt_hf.commands import landscape as script
from minigpt_hf.evaluation import make_windows
from minigpt_hf.landscape import filter_normalized_direction, loss_landscape, plot_landscape




def tiny_model():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=32)).eval()


def tokens(n=200):
    return np.random.default_rng(0).integers(0, 50257, size=n, dtype=np.uint16)


def assert_png(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] * image.shape[1] > 100_000
    assert np.ptp(image.reshape(-1, image.shape[-1]), axis=0).max() > 0.5


def test_directions_are_filter_normalised():
    model = tiny_model()
    params = {n: p for n, p in model.named_parameters() if p.dim() > 1}
    direction = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    assert set(direction) == set(params) and "transformer.ln_f.weight" not in direction
    for name, weight in params.items():
        torch.testing.assert_close(direction[name].flatten(1).norm(dim=1), weight.flatten(1).norm(dim=1))
        assert not torch.equal(direction[name], weight)


def test_centre_is_plain_loss_and_weights_are_restored(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    windows = make_windows(tokens(), 16, range(3))
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
    plain = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item()
    result = loss_landscape(model, windows, grid=3, span=0.5, progress=False)
    assert list(result["alphas"]) == list(result["betas"]) == [-0.5, 0.0, 0.5]
    assert result["losses"].shape == (3, 3)
    assert result["losses"][1, 1] == pytest.approx(plain, abs=1e-6)
    assert (np.delete(result["losses"].ravel(), 4) > plain).any()  # moving off the weights changes the loss
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    paths = plot_landscape(result, plain, tmp_path)
    saved = np.load(paths["landscape.npz"])
    for key in ("alphas", "betas", "losses"):
        np.testing.assert_array_equal(saved[key], result[key])
    assert_png(paths["landscape_contour.png"])
    assert_png(paths["landscape_surface.png"])


def test_even_grid_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        loss_landscape(tiny_model(), make_windows(tokens(), 16, range(1)), grid=4)


def test_cli(tmp_path, capsys):
    from minigpt_hf.tokenization import get_tokenizer

    checkpoint = tmp_path / "ckpt"
    tiny_model().save_pretrained(checkpoint)
    get_tokenizer().save_pretrained(checkpoint)
    np.save(tmp_path / "shard_val_000000.npy", tokens())
    args = ["--grid", "3", "--batch_size", "2", "--seq_len", "16", "--device", "cpu"]
    assert script.main([str(checkpoint), "--data", str(tmp_path / "shard_val_000000.npy"), *args,
                        "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batch"] == [2, 16] and len(summary["files"]) == 3
    assert np.load(tmp_path / "out" / "landscape.npz")["losses"][1, 1] == pytest.approx(summary["final_loss"])
    (tmp_path / "text.txt").write_text("To be, or not to be, that is the question. " * 20)
    assert script.main([str(checkpoint), "--text", str(tmp_path / "text.txt"), *args,
                        "--out", str(tmp_path / "text_out")]) == 0
    assert (tmp_path / "text_out" / "landscape_surface.png").exists()
    capsys.readouterr()
    assert script.main([str(checkpoint), "--data", str(tmp_path / "missing.npy"), *args]) == 2
    err = capsys.readouterr().err.strip()  # after transformers' "Loading weights" bar
    assert "Traceback" not in err and "missing.npy" in err.splitlines()[-1]
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
