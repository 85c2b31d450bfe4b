"""Training figures from TensorBoard logs: logged values are what is drawn, PNGs are real, missing tags are skipped."""


import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from minigpt_hf.commands import plot as script
from minigpt_hf.plotting import CHANCE, GPT2_124M_HELLASWAG, plot_training, read_scalars

STEPS = list(range(0, 50, 5))
TRAIN = [11.0 - 0.2 * i for i in range(len(STEPS))]
VAL_STEPS, VAL = [0, 25, 45], [10.9, 9.5, 9.2]
LR = [6e-4 * min(1.0, s / 15) * (1 - s / 100) for s in STEPS]  # warmup to step 15, then decay
HS_STEPS, HS = [0, 20, 45], [0.24, 0.255, 0.27]



def write_log(log_dir, series):
    writer = SummaryWriter(log_dir=str(log_dir))
    for tag, steps, values in series:
        for step, value in zip(steps, values):
            writer.add_scalar(tag, value, global_step=step)
    writer.close()


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    write_log(run / "minigpt", [("train/loss", STEPS, TRAIN), ("val/loss", VAL_STEPS, VAL), ("train/lr", STEPS, LR),
                                ("hellaswag/acc", HS_STEPS, HS), ("hellaswag/acc_norm", HS_STEPS, HS)])
    return run


def assert_png(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] * image.shape[1] > 100_000
    assert np.ptp(image.reshape(-1, image.shape[-1]), axis=0).max() > 0.5  # not a single colour


def lines(fig):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in fig.axes[0].get_lines()}


def test_read_scalars_recursively(run_dir):
    scalars = read_scalars(run_dir)
    assert list(scalars["train/loss"][0]) == STEPS
    np.testing.assert_allclose(scalars["train/loss"][1], TRAIN, rtol=1e-6)
    np.testing.assert_allclose(scalars["train/lr"][1], LR, rtol=1e-6)


def test_resumed_run_later_write_wins(run_dir):
    write_log(run_dir / "resumed", [("val/loss", [25, 60], [9.4, 9.0])])
    steps, values = read_scalars(run_dir)["val/loss"]
    assert list(steps) == [0, 25, 45, 60]
    np.testing.assert_allclose(values, [10.9, 9.4, 9.2, 9.0], rtol=1e-6)


def test_figures_draw_the_logged_values(run_dir, tmp_path):
    from minigpt_hf.plotting import plot_hellaswag, plot_loss, plot_lr

    scalars = read_scalars(run_dir)
    drawn = lines(plot_loss(scalars, tmp_path / "1.png"))
    assert drawn["train"][0] == STEPS and drawn["val"][0] == VAL_STEPS
    np.testing.assert_allclose(drawn["train"][1], TRAIN, rtol=1e-6)
    np.testing.assert_allclose(drawn["val"][1], VAL, rtol=1e-6)
    drawn = lines(plot_lr(scalars, tmp_path / "2.png"))
    np.testing.assert_allclose(drawn["learning rate"][1], LR, rtol=1e-6)
    assert drawn["warmup ends (step 15)"][0] == [15, 15]
    drawn = lines(plot_hellaswag(scalars, tmp_path / "7.png"))
    assert drawn["acc_norm"][0] == HS_STEPS
    np.testing.assert_allclose(drawn["acc_norm"][1], HS, rtol=1e-6)
    assert drawn[f"GPT-2 124M ({GPT2_124M_HELLASWAG})"][1] == [0.2955, 0.2955]
    assert drawn[f"chance ({CHANCE})"][1] == [0.25, 0.25]


def test_plot_training_writes_pngs(run_dir, tmp_path):
    written = plot_training(run_dir, tmp_path / "figs")
    assert sorted(written) == ["fig1_loss", "fig2_lr", "fig7_hellaswag"]
    for path in written.values():
        assert path.parent == tmp_path / "figs"
        assert_png(path)


def test_missing_tags_are_skipped_with_a_note(tmp_path, capsys):
    write_log(tmp_path / "run", [("train/loss", STEPS, TRAIN)])
    written = plot_training(tmp_path / "run")
    assert list(written) == ["fig1_loss"] and written["fig1_loss"].parent == tmp_path / "run" / "figures"
    out = capsys.readouterr().out
    assert "skipping fig2_lr.png" in out and "skipping fig7_hellaswag.png" in out


def test_cli(run_dir, tmp_path, capsys):
    assert script.main([str(run_dir), "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    (tmp_path / "empty").mkdir()
    assert script.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no TensorBoard event files" in err
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
