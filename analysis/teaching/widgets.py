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
- ``momentum_map``: the (lr, beta) plane of the same quadratic: the noiseless convergence
  rate with its optimum (heavy ball's) and the exact noise floor, with critical damping.
- ``layer_noise_explorer``: the probe's gradient variance per role over one seed's steps.
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
from analysis.results.run_set import MissingData, RunSet, hidden_spectrum, spectrum_ranks
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
        plt.close(fig)  # shown once; the figure object stays readable for tests
        return fig

    start = {name: (spec[0] if isinstance(spec, tuple) else spec[-1]) for name, spec in sliders.items()}
    if is_static() if static is None else static:
        show(**start)
        return None
    import ipywidgets

    controls = {}
    for name, spec in sliders.items():
        if isinstance(spec, list):
            controls[name] = ipywidgets.SelectionSlider(
                options=spec, value=start[name], description=name, continuous_update=False
            )
        else:
            value, low, high, step = spec
            controls[name] = ipywidgets.FloatSlider(
                value=value, min=low, max=high, step=step, description=name, continuous_update=False
            )
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
        right.scatter(
            eig.real,
            eig.imag,
            s=14,
            color=colour,
            alpha=0.7,
            label=f"{name}: max |eigenvalue| {np.abs(eig).max():.3f}",
        )
    left.set(
        yscale="log",
        xlabel="step",
        ylabel="expected loss",
        ylim=(None, 1e2),
        title=f"lr {lr:g}, noise {sigma:g}",
    )
    left.legend(fontsize=7)
    circle = np.linspace(0, 2 * np.pi, 200)
    right.plot(np.cos(circle), np.sin(circle), color="0.4", lw=1, label="unit circle")
    right.set(
        aspect="equal",
        xlim=(-1.6, 1.6),
        ylim=(-1.6, 1.6),
        xlabel="real part",
        ylabel="imaginary part",
        title="Eigenvalues, one pair per curvature",
    )
    right.legend(fontsize=7, loc="lower left")
    return fig


def momentum_map(sigma: float = 0.3, dim: int = 32, h_min: float = 1e-2, points: int = 41):
    """Over a grid of (lr, beta): left, the convergence speed without noise (steps to shrink
    the slowest error by e, ``-1 / log quadratic.contraction``; white where it does not
    converge) with SGD's best and the
    heavy-ball optimum marked; right, the exact noise floor (``quadratic.ema_floor``, log
    scale) with the critical-damping line of the slowest coordinate."""
    lrs = np.geomspace(0.05, 50.0, points)
    betas = np.linspace(0.0, 0.98, points)
    rate = np.array([[quadratic.contraction(lr, b, dim, h_min) for lr in lrs] for b in betas])
    floor = np.array([[quadratic.ema_floor(lr, b, sigma, dim, h_min) for lr in lrs] for b in betas])
    fig, (left, right) = style.figure(2, width=4.8, height=3.9)
    from matplotlib.colors import LogNorm

    with np.errstate(divide="ignore"):  # steps for the slowest error to shrink by e
        steps = np.where(rate < 1, -1.0 / np.log(np.where(rate < 1, rate, 0.5)), np.nan)
    mesh = left.pcolormesh(lrs, betas, steps, shading="nearest", cmap="viridis", norm=LogNorm())
    fig.colorbar(mesh, ax=left, label="steps to shrink the error by e")
    lr_opt, beta_opt, rate_opt = quadratic.optimal_momentum(h_min)
    sgd = min(lrs, key=lambda lr: quadratic.contraction(lr, 0.0, dim, h_min))
    left.scatter(
        [lr_opt],
        [beta_opt],
        marker="*",
        s=120,
        color="#d62728",
        label=f"optimum: lr {lr_opt:.3g}, beta {beta_opt:.2f}, rate {rate_opt:.3f}",
    )
    left.scatter(
        [sgd],
        [0.0],
        marker="o",
        s=40,
        color="#7f7f7f",
        label=f"SGD's best: rate {quadratic.contraction(sgd, 0.0, dim, h_min):.3f}",
    )
    left.set(xscale="log", xlabel="lr", ylabel="beta", title=f"Speed, condition number {1 / h_min:.0f}")
    left.legend(fontsize=7, loc="upper left")
    mesh = right.pcolormesh(
        lrs, betas, np.log10(np.where(np.isfinite(floor), floor, np.nan)), shading="nearest", cmap="magma"
    )
    fig.colorbar(mesh, ax=right, label="log10 noise floor")
    critical = [quadratic.critical_damping(b) / (h_min * (1 - b)) for b in betas]
    right.plot(critical, betas, color="white", lw=1.2, ls="--", label="slowest coordinate critically damped")
    right.set(
        xscale="log",
        xlabel="lr",
        ylabel="beta",
        xlim=(lrs[0], lrs[-1]),
        title=f"Noise floor, noise {sigma:g} (white: unstable)",
    )
    right.legend(fontsize=7, loc="upper left")
    return fig


def layer_noise_explorer(rec: RunSet, seed: int = 0, relative: bool = False, label: str = "col_norm"):
    """The paper's probe of gradient variance (``probe_var``, or ``probe_var_rel``: relative to
    ``||g||^2``) summed per role over the steps of one seed of ``label``, one line per role."""
    stat = "probe_var_rel" if relative else "probe_var"
    rows = rec.metrics[
        (rec.metrics["label"] == label) & (rec.metrics["seed"] == seed) & (rec.metrics["stat"] == stat)
    ]
    if rows.empty:
        raise MissingData(f"no {stat} rows for {label} seed {seed} under {rec.root}")
    per_role = rows.groupby(["step", "role"])["value"].sum().unstack()
    fig, (ax,) = style.figure(width=5.6, height=3.6)
    for role in [r for r in style.ROLE_ORDER if r in per_role]:
        ax.plot(
            per_role.index,
            per_role[role],
            marker="o",
            ms=3,
            lw=1.2,
            color=style.role_palette([role])[role],
            label=role,
        )
    ax.set(
        yscale="log",
        xlabel="step",
        ylabel="variance / ||g||^2" if relative else "variance (total)",
        title=f"{label}, seed {seed}: the probe per role",
    )
    ax.legend(fontsize=7)
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
    balls = {
        "l2": np.stack([np.cos(t), np.sin(t)]),
        "max": np.array([[1, -1, -1, 1, 1], [1, 1, -1, -1, 1]]),
        "l1": np.array([[1, 0, -1, 0, 1], [0, 1, 0, -1, 0]]),
    }
    colours = {"l2": "#1f77b4", "max": "#d62728", "l1": "#2ca02c"}
    for name, d in steepest_2d(g).items():
        ax.plot(*balls[name], color=colours[name], lw=1)
        ax.annotate("", xy=d, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": colours[name], "lw": 2})
        ax.plot([], [], color=colours[name], lw=2, label=f"{name} ball; <g, d*> = {float(g @ d):.2f}")
    ax.annotate(
        "",
        xy=g,
        xytext=(0, 0),
        arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2, "linestyle": "--"},
    )
    ax.plot([], [], color="black", ls="--", label="gradient g")
    ax.set(
        aspect="equal",
        xlim=(-1.7, 1.7),
        ylim=(-1.7, 1.7),
        xlabel="coordinate 1",
        ylabel="coordinate 2",
        title=f"Steepest directions for g at {angle:g} degrees",
    )
    ax.legend(fontsize=7, loc="lower left")
    return fig


def spectrum_steps(rec: RunSet) -> list[int]:
    """The steps at which the drawn hidden matrix's update spectra were recorded."""
    return sorted(int(s) for s in hidden_spectrum(rec)[1]["step"].unique())


def spectrum_explorer(rec: RunSet, step: int):
    """Normalized singular values ``s_i / s_1`` of one hidden matrix's update at ``step`` (the
    one ``instrument_figures.update_spectra`` draws), one line per arm, mean over seeds, against the rank."""
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
        ax.plot(
            ranks if ranks is not None else np.arange(1, len(mean) + 1),
            mean,
            color=colours[label],
            lw=2 if label == "scale" else 1.2,
            label=label,
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="rank i",
        ylabel="s_i / s_1",
        title=f"{name.replace('model.', '')}: update spectrum at step {step}",
    )
    ax.legend(fontsize=7, ncols=2)
    return fig
