"""The notebooks' explorers: each draws for any slider value, the sliders redraw with the
values set, and static mode (CI, HTML pages) draws once without a widget."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from analysis.results.figures import RunSet  # noqa: E402
from analysis.results.run_set import REFERENCE  # noqa: E402
from analysis.teaching import widgets  # noqa: E402
from toy_models import quadratic  # noqa: E402


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in [ax.title, *ax.get_legend().get_texts()])


def test_momentum_explorer_shows_the_exact_floor_and_eigenvalues():
    fig = widgets.momentum_explorer(lr=0.5, beta=0.8, sigma=0.4, steps=50)
    text = _texts(fig)
    assert f"{quadratic.ema_floor(0.5, 0.8, 0.4):.3g}" in text
    assert f"{np.abs(quadratic.eigenvalues(0.5, 0.8)).max():.3f}" in text
    # SGD past its stability limit (lr h < 2 with h up to 1): said, not drawn as a floor
    assert "unstable" in _texts(widgets.momentum_explorer(lr=2.5, beta=0.9, sigma=0.3, steps=50))


def test_eigenvalues_decide_stability_as_the_floor_does():
    for lr, beta in ((0.5, 0.0), (2.5, 0.0), (2.5, 0.9), (3.0, 0.5)):
        stable = np.abs(quadratic.eigenvalues(lr, beta)).max() < 1
        assert stable == np.isfinite(quadratic.ema_floor(lr, beta))


def test_steepest_directions_reach_the_dual_norms():
    g = np.array([0.8, -0.3])
    d = widgets.steepest_2d(g)
    assert g @ d["l2"] == pytest.approx(np.linalg.norm(g))  # dual of l2: l2
    assert g @ d["max"] == pytest.approx(np.abs(g).sum())  # dual of max: l1
    assert g @ d["l1"] == pytest.approx(np.abs(g).max())  # dual of l1: max


def test_sliders_redraw_with_the_values_set():
    pytest.importorskip("ipywidgets")
    seen = []

    def draw(lr, beta):
        seen.append((lr, beta))
        return widgets.momentum_explorer(lr=lr, beta=beta, steps=20)

    box = widgets.explore(draw, static=False, lr=(1.0, 0.1, 2.0, 0.1), beta=(0.9, 0.0, 0.99, 0.01))
    sliders = {w.description: w for w in box.children if hasattr(w, "description")}
    sliders["beta"].value = 0.5
    assert seen[-1] == (1.0, 0.5) and "momentum 0.5" in _texts(box.result)


def test_smoke_mode_keeps_its_sliders(monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("SCALE_LAB_SMOKE", "1")
    monkeypatch.delenv("SCALE_LAB_STATIC", raising=False)
    box = widgets.explore(lambda angle: widgets.norm_ball_explorer(angle), angle=(45.0, 0.0, 360.0, 5.0))
    assert box is not None and [w.description for w in box.children if hasattr(w, "description")] == ["angle"]


def test_static_mode_draws_once_and_returns_no_widget(monkeypatch):
    monkeypatch.setenv("SCALE_LAB_STATIC", "1")
    calls = []
    assert (
        widgets.explore(
            lambda angle: calls.append(angle) or widgets.norm_ball_explorer(angle),
            angle=(45.0, 0.0, 360.0, 5.0),
        )
        is None
    )
    assert calls == [45.0]


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference recordings not built")
def test_spectrum_explorer_draws_every_recorded_step():
    rec = RunSet(REFERENCE)
    steps = widgets.spectrum_steps(rec)
    assert len(steps) >= 2
    for step in (steps[0], steps[-1]):
        fig = widgets.spectrum_explorer(rec, step)
        assert f"step {step}" in fig.axes[0].get_title() and len(fig.axes[0].lines) >= 5


def test_the_layer_noise_explorer_draws_one_seed_per_definition():
    from analysis.results.run_set import REFERENCE, MissingData, RunSet
    from analysis.teaching import widgets

    rec = RunSet(REFERENCE)
    seed = int(rec.results[rec.results["label"] == "col_norm"]["seed"].iloc[0])
    total, relative = (widgets.layer_noise_explorer(rec, seed, flag) for flag in (False, True))
    lines = {line.get_label(): line.get_ydata() for line in total.axes[0].get_lines()}
    assert {"output", "embedding", "hidden"} <= set(lines)
    assert relative.axes[0].get_ylabel() != total.axes[0].get_ylabel()
    with pytest.raises(MissingData, match="seed 999"):
        widgets.layer_noise_explorer(rec, 999)


def test_the_momentum_map_marks_the_optimum_and_sgd_s_best():
    from analysis.teaching import widgets
    from toy_models import quadratic

    fig = widgets.momentum_map(points=9)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    lr, beta, rate = quadratic.optimal_momentum()
    assert any(f"beta {beta:.2f}" in t and f"rate {rate:.3f}" in t for t in labels), labels
    assert quadratic.contraction(lr, beta) < min(quadratic.contraction(x, 0.0) for x in (0.5, 1.0, 1.9))
