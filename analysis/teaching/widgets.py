"""Explorers for the notebooks: sliders (ipywidgets) over a drawing function, and a static
figure where sliders cannot move.

Each explorer is a plain function from its parameters to a matplotlib figure, which the tests
call directly. ``explore(draw, **sliders)`` puts it under sliders in a live notebook (SMOKE
mode included: sliders cost nothing), and draws it once at the sliders' starting values where
nothing could move them: in ``scale-lab notebooks --html`` (static pages; it sets
``SCALE_LAB_STATIC=1``) and where ipywidgets is not installed.

- ``momentum_explorer``: SGD and EMA momentum on the noisy quadratic (``toy_models.quadratic``)
  at a chosen lr, beta and noise, with their exact noise floors; and the eigenvalues of every
  coordinate's 2x2 system against the unit circle (the picture of Goh, "Why Momentum Really
  Works", Distill 2017): inside the circle the error contracts, outside it grows.
- ``norm_ball_explorer``: the unit balls of the l1, l2 and max norms in 2-D and the
  steepest-descent direction each gives for a gradient at a chosen angle,
  ``d* = argmax <g, d> s.t. ||d|| <= 1``; the value reached is the dual norm of ``g``.
- ``spectrum_explorer``: the normalized singular values of a hidden matrix's update for every
  arm at a recorded step (``update_spectrum`` in the recordings), against their rank.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from analysis.results import style
from analysis.results.run_set import (
    MissingData,
    RunSet,
    hidden_spectrum,
    spectrum_ranks,
)
from toy_models import quadratic


def is_static() -> bool:
    """True where sliders could not be moved: static HTML pages, no ipywidgets."""
    return os.environ.get("SCALE_LAB_STATIC") == "1" or importlib.util.find_spec("ipywidgets") is None


def explore(draw, static: bool | None = None, **sliders):
    """``draw(**values)`` under one slider per keyword ``name=(start, low, high, step)``
    (``name=[v1, v2, ...]`` for a choice); the drawn figure is also the widget's ``result``.

    Static (see ``is_static``): draws once at the starting values and returns None (so the
    cell does not show the figure a second time)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    def show(**values):
        fig = draw(**values)
        display(fig)
        plt.close(fig)   # shown once; the figure object stays readable for tests
        return fig

    start = {name: (spec[0] if isinstance(spec, tuple) else spec[-1]) for name, spec in sliders.items()}
    if is_static() if static is None else static:
        show(**start)
        return None
    import ipywidgets

    controls = {}
    for name, spec in sliders.items():
        if isinstance(spec, list):
            controls[name] = ipywidgets.SelectionSlider(options=spec, value=start[name], description=name,
                                                        continuous_update=False)
        else:
            value, low, high, step = spec
            controls[name] = ipywidgets.FloatSlider(value=value, min=low, max=high, step=step,
                                                    description=name, continuous_update=False)
    return ipywidgets.interactive(show, **controls)


def momentum_explorer(lr: float = 1.0, beta: float = 0.9, sigma: float = 0.3, steps: int = 400):
    """Left: expected loss of SGD and of EMA momentum ``beta`` at ``lr`` (64 noise draws) with
    the exact floors (``quadratic.ema_floor``); right: the eigenvalues of each coordinate's
    iteration matrix for SGD and momentum, with the unit circle."""
    fig, (left, right) = style.figure(2, width=4.6, height=3.8)
    for b, colour, name in ((0.0, "#7f7f7f", "SGD"), (beta, "#d62728", f"momentum {beta:g}")):
        floor = quadratic.ema_floor(lr, b, sigma)
        with np.errstate(over="ignore", invalid="ignore"):
            curve = quadratic.run(steps=steps, lr=lr, beta=b, sigma=sigma)
        curve = np.where(np.isfinite(curve) & (curve < 1e6), curve, np.nan)
        left.plot(curve, color=colour, lw=1.2, label=name)
        if np.isfinite(floor):
            left.axhline(floor, color=colour, ls=":", lw=1, label=f"{name}: exact floor {floor:.3g}")
        else:
            left.plot([], [], color=colour, ls=":", label=f"{name}: unstable (no floor)")
        eig = quadratic.eigenvalues(lr, b).ravel()
        right.scatter(eig.real, eig.imag, s=14, color=colour, alpha=0.7,
                      label=f"{name}: max |eigenvalue| {np.abs(eig).max():.3f}")
    left.set(yscale="log", xlabel="step", ylabel="expected loss", ylim=(None, 1e2),
             title=f"lr {lr:g}, noise {sigma:g}")
    left.legend(fontsize=7)
    circle = np.linspace(0, 2 * np.pi, 200)
    right.plot(np.cos(circle), np.sin(circle), color="0.4", lw=1, label="unit circle")
    right.set(aspect="equal", xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), xlabel="real part",
              ylabel="imaginary part", title="Eigenvalues, one pair per curvature")
    right.legend(fontsize=7, loc="lower left")
    return fig


def steepest_2d(g: np.ndarray) -> dict[str, np.ndarray]:
    """``argmax <g, d>`` over the unit ball of each norm in 2-D: l2 ``g/|g|``, max-norm
    ``sign(g)`` (Adam's limit, the ``sign`` rung), l1 the largest coordinate alone."""
    g = np.asarray(g, dtype=float)
    l1 = np.zeros(2)
    i = int(np.argmax(np.abs(g)))
    l1[i] = np.sign(g[i])
    return {"l2": g / np.linalg.norm(g), "max": np.sign(g), "l1": l1}


def norm_ball_explorer(angle: float = 30.0, stretch: float = 1.0):
    """The l1, l2 and max-norm unit balls and each one's steepest direction for
    ``g = (cos angle, stretch * sin angle)``."""
    theta = np.deg2rad(angle)
    g = np.array([np.cos(theta), stretch * np.sin(theta)])
    fig, (ax,) = style.figure(1, width=5.2, height=4.6)
    t = np.linspace(0, 2 * np.pi, 400)
    balls = {"l2": np.stack([np.cos(t), np.sin(t)]),
             "max": np.array([[1, -1, -1, 1, 1], [1, 1, -1, -1, 1]]),
             "l1": np.array([[1, 0, -1, 0, 1], [0, 1, 0, -1, 0]])}
    colours = {"l2": "#1f77b4", "max": "#d62728", "l1": "#2ca02c"}
    for name, d in steepest_2d(g).items():
        ax.plot(*balls[name], color=colours[name], lw=1)
        ax.annotate("", xy=d, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": colours[name], "lw": 2})
        ax.plot([], [], color=colours[name], lw=2, label=f"{name} ball; <g, d*> = {float(g @ d):.2f}")
    ax.annotate("", xy=g, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2,
                                                     "linestyle": "--"})
    ax.plot([], [], color="black", ls="--", label="gradient g")
    ax.set(aspect="equal", xlim=(-1.7, 1.7), ylim=(-1.7, 1.7), xlabel="coordinate 1",
           ylabel="coordinate 2", title=f"Steepest directions for g at {angle:g} degrees")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def spectrum_steps(rec: RunSet) -> list[int]:
    """The steps at which the drawn hidden matrix's update spectra were recorded."""
    return sorted(int(s) for s in hidden_spectrum(rec)[1]["step"].unique())


def spectrum_explorer(rec: RunSet, step: int):
    """Normalized singular values ``s_i / s_1`` of one hidden matrix's update at ``step`` (the
    one ``figures.update_spectra`` draws), one line per arm, mean over seeds, against the rank."""
    name, rows = hidden_spectrum(rec)
    rows = rows[rows["step"] == step]
    if rows.empty:
        raise MissingData(f"no 'update_spectrum' of {name} at step {step}; recorded at {spectrum_steps(rec)}")
    labels = style.ordered(rows["label"])
    colours = style.palette(labels)
    fig, (ax,) = style.figure(1, width=6.0, height=3.8)
    for label in labels:
        of_label = rows[rows["label"] == label]
        mean = np.mean([np.asarray(v, dtype=float) for v in of_label["values"]], axis=0)
        ranks = spectrum_ranks(rec, of_label["run"].iloc[0], name, len(mean))
        ax.plot(ranks if ranks is not None else np.arange(1, len(mean) + 1), mean,
                color=colours[label], lw=2 if label == "scale" else 1.2, label=label)
    ax.set(xscale="log", yscale="log", xlabel="rank i", ylabel="s_i / s_1",
           title=f"{name.replace('model.', '')}: update spectrum at step {step}")
    ax.legend(fontsize=7, ncols=2)
    return fig
