"""Figures a reader can read: every figure drawn from the shipped recordings has no
text on top of another text, none outside the canvas and no slanted labels. Checked on the
rendered artists' bounding boxes: tick labels that are drawn, axis labels, titles, legends,
annotations and figure titles."""

import functools

import matplotlib
import pytest

from analysis.results import figures

REFERENCE = "data/recordings/reference"


def drawn_texts(fig):
    """``(text, rotation, window extent)`` of every text the canvas draws."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = {}

    def add(t):
        if t is not None and t.get_visible() and t.get_text().strip():
            found[id(t)] = t

    for t in [*fig.texts, fig._suptitle]:
        add(t)
    for legend in fig.legends:  # figure-level legends (beside the panels)
        for t in [*legend.get_texts(), legend.get_title()]:
            add(t)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis._update_ticks():  # only ticks inside the view are drawn
                add(tick.label1)
                add(tick.label2)
            add(axis.label)
            add(axis.get_offset_text())
        for t in (ax.title, ax._left_title, ax._right_title, *ax.texts):
            add(t)
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            for t in [*legend.get_texts(), legend.get_title()]:
                add(t)
    return [(t.get_text(), t.get_rotation(), t.get_window_extent(renderer)) for t in found.values()]


@functools.cache
def _reference():
    """The shipped recordings, read once per test process (a million rows: seconds a read)."""
    return figures.RunSet(REFERENCE)


def _explorer(name):
    """The notebooks' explorers at their starting values and at a harder setting."""
    from analysis.teaching import widgets

    rec = _reference()
    return {
        "momentum": lambda: widgets.momentum_explorer(),
        "momentum_unstable": lambda: widgets.momentum_explorer(lr=2.8, beta=0.99, sigma=1.0),
        "norm_balls": lambda: widgets.norm_ball_explorer(),
        "norm_balls_stretched": lambda: widgets.norm_ball_explorer(angle=200.0, stretch=0.1),
        "spectrum": lambda: widgets.spectrum_explorer(rec, widgets.spectrum_steps(rec)[-1]),
    }[name]()


EXPLORERS = ["momentum", "momentum_unstable", "norm_balls", "norm_balls_stretched", "spectrum"]


@pytest.mark.parametrize("name", list(figures.REGISTRY) + [f"explorer:{e}" for e in EXPLORERS])
def test_no_text_overlaps_or_leaves_the_canvas(name):
    matplotlib.use("Agg")
    if name.startswith("explorer:"):
        fig = _explorer(name.split(":")[1])
    else:
        fig = figures.REGISTRY[name](_reference())
    texts = drawn_texts(fig)
    canvas = fig.bbox
    assert len(texts) >= 5
    slanted = [t for t, rotation, _ in texts if rotation % 90]
    assert not slanted, f"slanted labels read badly and their boxes overlap: {slanted}"
    outside = [
        t
        for t, _, box in texts
        if box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > canvas.x1 + 0.5 or box.y1 > canvas.y1 + 0.5
    ]
    assert not outside, f"outside the canvas: {outside}"
    overlapping = [
        (a[0], b[0])
        for i, a in enumerate(texts)
        for b in texts[i + 1 :]
        if min(a[2].x1, b[2].x1) - max(a[2].x0, b[2].x0) > 0.5
        and min(a[2].y1, b[2].y1) - max(a[2].y0, b[2].y0) > 0.5
    ]
    assert not overlapping, f"texts on top of each other: {overlapping}"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_every_figure_has_a_caption_and_the_report_shows_it(tmp_path):
    """One line per figure saying what to look at, under a link to it in report.md."""
    from pathlib import Path

    from analysis.results.captions import CAPTIONS
    from analysis.results.report import markdown
    from analysis.results.stats import final_results

    assert set(CAPTIONS) == set(figures.REGISTRY)
    report = markdown(REFERENCE, final_results(REFERENCE), figures_dir=Path(REFERENCE) / "figures")
    for name, caption in CAPTIONS.items():
        assert f"- [{name}](figures/{name}.png): {caption}" in report
