from pathlib import Path

import pytest

from analysis.recording import Recorder
from analysis.results import figures
from analysis.results.run_set import REFERENCE


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference recordings not built")
def test_every_registered_figure_renders_from_the_shipped_recordings(tmp_path):
    made, problems = figures.render_all(REFERENCE, tmp_path)
    assert problems == []
    assert {p.name for p in made} == {f"{n}.{ext}" for n in figures.REGISTRY for ext in ("png", "pdf")}
    assert all(p.stat().st_size > 5_000 for p in made)


def test_empty_or_foreign_directory_names_the_problem_and_still_draws_the_rest(tmp_path):
    (tmp_path / "runs" / "notes").mkdir(parents=True)
    (tmp_path / "runs" / "notes" / "readme.txt").write_text("not a run")
    made, problems = figures.render_all(tmp_path / "runs", tmp_path / "out")
    # the figures that need no recordings are still drawn
    assert sorted(p.name for p in made) == sorted(
        f"{n}.{ext}" for n in figures.SELF_CONTAINED for ext in ("png", "pdf")
    )
    assert any("no usable run directories under" in p for p in problems)
    assert figures.main(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_a_missing_statistic_is_named_and_other_figures_are_made(tmp_path):
    # an uninstrumented finished run: loss curves and bars work, variance figures cannot
    with Recorder(tmp_path / "adamw" / "seed0") as rec:
        rec.write_config(
            {"config": {"optimizer": "adamw", "label": "adamw", "model": "nano", "seed": 0, "lr": 1e-3}}
        )
        for step in range(1, 5):
            rec.log(step, {"loss": 9 - step})
        rec.log(4, {"eval_loss": 5.0})
        rec.finish({"first_eval_loss": 9.0, "final_eval_loss": 5.0, "optimizer_state_bytes": 8})
    made, problems = figures.render_all(tmp_path, tmp_path / "out")
    names = {Path(p).stem for p in made}
    assert {"loss_curves", "normalization_ablation", "memory_vs_perplexity"} <= names
    variance = [p for p in problems if p.startswith("grad_variance_by_layer")]
    assert variance and "no 'grad_var' rows" in variance[0] and "instrument" in variance[0]


def test_unknown_figure_is_an_error(tmp_path, capsys):
    assert figures.main(["--runs", str(tmp_path), "--only", "fig9"]) == 2
    assert "unknown figure(s) ['fig9']" in capsys.readouterr().err


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference recordings not built")
def test_loss_band_is_the_reports_t_interval():
    # the band at the last evaluation is the report's mean +- Student-t half-width, per arm
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt
    import numpy as np

    from analysis.results import stats, style

    rec = figures.RunSet(REFERENCE)
    table = stats.summary(stats.final_results(REFERENCE))
    fig = figures.loss_curves(rec)
    right = fig.axes[1]
    colours = style.palette(style.ordered(rec.stat("loss", per_param=False)["label"]))
    checked = 0
    for label in ("scale", "adamw", "sgd"):
        rgb = np.array(mcolors.to_rgb(colours[label]))
        bands = [
            c
            for c in right.collections
            if len(c.get_facecolor()) and np.allclose(c.get_facecolor()[0][:3], rgb) and c.get_paths()
        ]
        assert bands, f"no band drawn for {label}"
        xy = np.concatenate([p.vertices for p in bands[0].get_paths()])
        last = xy[np.isclose(xy[:, 0], xy[:, 0].max())][:, 1]
        mean, half = table.loc[label, "loss"], table.loc[label, "loss_ci"]
        assert last.min() == pytest.approx(mean - half, abs=1e-6)
        assert last.max() == pytest.approx(mean + half, abs=1e-6)
        checked += 1
    plt.close(fig)
    assert checked == 3


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference recordings not built")
def test_update_spectra_draws_each_kept_value_at_its_rank():
    # the instrumentation keeps a log-spaced subset of a long spectrum: the figure draws each
    # value at its rank (up to min(rows, cols)), not at its position in the subset
    import matplotlib.pyplot as plt

    from analysis.instrument.spectra import log_spaced
    from toy_models.llama import load_config, matrix_shapes

    rec = figures.RunSet(REFERENCE)
    fig = figures.update_spectra(rec)
    name = fig.axes[0].get_title().split(": ")[1]
    model = rec.results["model"].iloc[0]  # the recordings' own model
    shape = dict(
        (n.replace("model.", ""), s) for n, _, s in matrix_shapes(load_config(model, vocab_size=2048))
    )[name]
    want = [i + 1 for i in log_spaced(min(shape))]
    for line in fig.axes[0].lines:
        assert list(line.get_xdata()) == want
    assert fig.axes[0].get_xlabel() == "rank i"
    plt.close(fig)


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference recordings not built")
def test_the_ladder_is_dots_on_an_axis_near_the_losses():
    from analysis.results import stats

    rec = figures.RunSet(REFERENCE)
    table = stats.summary(stats.final_results(REFERENCE))
    ax = figures.normalization_ablation(rec).axes[0]
    assert not ax.patches  # no bars from 0
    low, high = ax.get_xlim()
    assert low > 0.5 * table["loss"].min() and high >= table["loss"].max()
    drawn = sorted(line.get_xdata()[0] for line in ax.lines if line.get_marker() == "o")
    assert drawn == pytest.approx(sorted(table["loss"]))


def test_a_log_axis_band_stays_on_the_axis():
    from analysis.results import stats

    wide = [1.0, 100.0]  # a t-interval of two seeds reaches far below 0
    assert stats.t_band(wide)[0] < 0
    low, high = stats.log_band(wide)
    assert low == pytest.approx(0.1 * 50.5) and high == stats.t_band(wide)[1]
    assert stats.log_band([1.0, 1.1, 0.9]) == stats.t_band([1.0, 1.1, 0.9])  # a tight one is as is


def test_a_long_spectrum_s_kept_values_get_their_ranks(tmp_path):
    # a 300 x 200 update keeps a log-spaced subset of its 200 singular values: their ranks
    from types import SimpleNamespace

    from analysis.instrument.spectra import log_spaced
    from analysis.results.run_set import spectrum_ranks

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"roles": {"w": {"shape": [300, 200]}}}')
    kept = len(log_spaced(200))
    ranks = spectrum_ranks(SimpleNamespace(root=tmp_path), "run", "w", kept)
    assert list(ranks) == [i + 1 for i in log_spaced(200)] and ranks[-1] == 200 and kept < 200
    assert spectrum_ranks(SimpleNamespace(root=tmp_path), "run", "w", 200) is None  # not what was kept


def test_the_lr_sweep_draws_a_version_3_grid_at_each_arm_s_chosen_beta2():
    """A version-3 tuning.json: points screened on one tuning seed and candidates on two (rows
    of unequal length), and an arm whose chosen beta2 is not the first choice."""
    import matplotlib.pyplot as plt

    tuning = {
        "steps": 10,
        "tune_seeds": [0, 1],
        "beta2_choices": [0.999, 0.95],
        "arms": {
            "adamw": {
                "grid": {"0.001": [4.3], "0.002": [4.1, 4.2]},
                "beta2_grid": {"0.95": {"0.002": [4.0, 4.2], "0.004": [4.5]}},
                "beta2": 0.95,
                "best": 0.002,
            }
        },
    }

    class Tuned:
        root = Path("tuned")

        def side_file(self, name):
            return tuning

    ax = figures.lr_sweep(Tuned()).axes[0]
    mean_line = ax.lines[0]
    assert list(mean_line.get_xdata()) == [0.002, 0.004]  # beta2 0.95's column
    assert list(mean_line.get_ydata()) == pytest.approx([4.1, 4.5])
    plt.close("all")
