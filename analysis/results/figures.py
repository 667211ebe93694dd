"""The figure registry: plain functions from recordings to matplotlib figures.

``scale-lab figures --runs DIR --out DIR`` (``python -m analysis.results.figures``) renders every
registered figure as PNG and PDF; notebooks call the same functions. Each function takes a
``RunSet`` (the runs under one directory, loaded once, lazily) and returns a ``Figure``, or
raises ``MissingData`` naming what it needs; ``render_all`` reports that and goes on with the
other figures. Figures read only the tidy recordings (never free text).

=============================  ============================================================
``grad_variance_by_layer``      relative gradient variance per role over training (paper 4a)
``grad_variance_with_momentum`` the same with output-layer momentum (``scale``; paper 4b)
``loss_curves``                 train and validation loss of every arm, with the corpus's
                                unigram and bigram lines
``lr_sweep``                    final loss against peak lr per arm (the tuning)
``normalization_ablation``      final validation loss per arm, bars with 95% intervals
``column_norm_stats``           update row-RMS spread per role; output-layer gradient row RMS
                                against token frequency
``update_spectra``              normalized singular values of a hidden update; stable rank
``memory_vs_perplexity``        optimizer state against perplexity (runs; the paper at 1B)
``momentum_quadratic``          SGD vs EMA momentum on a noisy quadratic, with exact floors
=============================  ============================================================

(the instrumentation's from ``analysis.results.instrument_figures``) and the figures of the
paper's argument from ``analysis.results.argument_figures``
(``sgd_vs_normalized``, ``momentum_placement``, ``output_entry_histogram``). In a notebook,
``show(name, rec)`` draws one with its caption (``analysis.results.captions``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from analysis.arguments import Parser
from analysis.recording import REFERENCE_LINES, TUNING, RecordingError
from analysis.results import paper, style
from analysis.results.argument_figures import momentum_placement, output_entry_histogram, sgd_vs_normalized
from analysis.results.captions import CAPTIONS
from analysis.results.instrument_figures import (
    column_norm_stats,
    grad_variance_by_layer,
    grad_variance_with_momentum,
    update_spectra,
)
from analysis.results.memory import analytic_terms
from analysis.results.root import chosen_grid, scan_runs
from analysis.results.run_set import REFERENCE, MissingData, RunSet
from analysis.results.stats import summary, t_band
from toy_models import quadratic


def _mark_divergence(ax, evals, colours) -> None:
    """A validation loss recorded as non-finite (null) is drawn as an x on the panel's top edge
    at its step, labelled, instead of vanishing from the line."""
    bad = evals[evals["value"].isna()]
    for (_run, label), rows in bad.groupby(["run", "label"]):
        step = rows["step"].min()
        ax.plot(
            [step],
            [1.0],
            marker="X",
            markersize=9,
            color=colours.get(label, "0.2"),
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            linestyle="none",
        )
        ax.annotate(
            f"{label} diverged",
            (step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, -12),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color=colours.get(label, "0.2"),
        )


def loss_curves(rec: RunSet):
    """Training loss (10-step running mean) and validation loss of every arm over steps."""
    import seaborn as sns

    train = rec.stat("loss", per_param=False).copy()
    try:
        evals = rec.stat("eval_loss", per_param=False)
    except MissingData:  # a user's loop may record no validation loss
        evals = train.iloc[0:0]
    labels = style.ordered(train["label"])
    colours = style.palette(labels)
    fig, (left, right) = style.figure(2)
    # a 10-step running mean per run makes the ladder readable without hiding divergence
    train["smoothed"] = train.groupby("run")["value"].transform(lambda v: v.rolling(10, 1).mean())
    sns.lineplot(
        train,
        x="step",
        y="smoothed",
        hue="label",
        hue_order=labels,
        palette=colours,
        errorbar=None,
        ax=left,
        legend=False,
    )
    if evals.empty:
        right.text(
            0.5,
            0.5,
            "no validation loss recorded",
            ha="center",
            va="center",
            transform=right.transAxes,
            color="0.4",
        )
    else:
        sns.lineplot(
            evals,
            x="step",
            y="value",
            hue="label",
            hue_order=labels,
            palette=colours,
            errorbar=t_band,
            marker="o",
            ax=right,
        )
        _mark_divergence(right, evals, colours)
    left.set(xlabel="optimizer step", ylabel="train loss (10-step mean)", title="Training loss")
    right.set(xlabel="optimizer step", ylabel="validation loss", title="Validation loss")
    lines = rec.side_file(REFERENCE_LINES)
    style.reference_lines(left, lines, label=False)
    style.reference_lines(right, lines, label=False)
    for name, value in (lines or {}).items():
        if name in style.REFERENCE_LINE_STYLES:
            right.annotate(
                f"{name} {value:.2f}",
                (0.99, value),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=7,
                color="0.3",
            )
    _highlight(colours, "scale", left, right)
    if not evals.empty:  # beside the panels, not over the curves
        handles, names = right.get_legend_handles_labels()
        right.get_legend().remove()
        fig.legend(handles, names, loc="outside right upper", fontsize=8, title="arm")
    return fig


def _highlight(colours: dict, label: str, *axes) -> None:
    """Draw ``label``'s lines (the optimizer the figure is about) thick and on top."""
    import matplotlib.colors as mcolors

    if label not in colours:
        return
    for ax in axes:
        for line in ax.lines:
            if mcolors.same_color(line.get_color(), colours[label]):
                line.set_linewidth(2.6)
                line.set_zorder(5)


def lr_sweep(rec: RunSet):
    """The tuning behind the results: final validation loss against peak lr for every arm,
    one point per seed, the mean as a line, the chosen lr ringed (a ringed point at a line's
    end would be an optimum at the grid's edge), at each arm's chosen beta2."""
    tuning = rec.side_file(TUNING)
    if tuning is None:
        raise MissingData(
            f"no {TUNING} under {rec.root}: the tuned preset writes it "
            "(`scale-lab reproduce --preset reference`)"
        )
    labels = style.ordered(tuning["arms"])
    colours = style.palette(labels)
    fig, (ax,) = style.figure(width=7.5, height=4.2)
    for label in labels:
        row = tuning["arms"][label]
        # a point has as many losses as seeds ran it (a screen on one tuning seed, a candidate
        # on every one), so the rows are padded with NaN
        grid = chosen_grid(tuning, row)
        lrs = [float(lr) for lr in grid]
        losses = np.full((len(grid), max(len(v) for v in grid.values())), np.nan)
        for i, seeds in enumerate(grid.values()):
            losses[i, : len(seeds)] = [np.nan if v is None or not np.isfinite(v) else v for v in seeds]
        ax.plot(lrs, np.nanmean(losses, axis=1), color=colours[label], label=label, marker=".")
        for k in range(losses.shape[1]):
            ax.scatter(lrs, losses[:, k], color=colours[label], s=8, alpha=0.5)
        if row["best"] is not None:
            best = np.nanmean(losses[lrs.index(row["best"])])
            ax.scatter([row["best"]], [best], s=90, facecolors="none", edgecolors=colours[label])
    ax.set(
        xscale="log",
        xlabel="peak learning rate of the matrices",
        ylabel="final validation loss",
        title=f"lr tuning at the reported length ({tuning['steps']} steps, seeds "
        f"{', '.join(map(str, tuning['tune_seeds']))})",
    )
    ax.legend(fontsize=7, ncols=2)
    return fig


def normalization_ablation(rec: RunSet):
    """Final validation loss per arm: dots with Student-t 95% intervals over seeds, on an axis
    that starts near the losses (bars from 0 would hide differences of tenths of a nat)."""
    table = summary(rec.results)
    labels = style.ordered(table.index)
    table = table.loc[labels]
    fig, (ax,) = style.figure(width=7, height=0.35 * len(labels) + 1.4)
    colours = style.palette(labels)
    err = np.where(np.isfinite(table["loss_ci"]), table["loss_ci"], 0.0)
    for i, label in enumerate(labels):
        ax.errorbar(table.loc[label, "loss"], i, xerr=err[i], fmt="o", color=colours[label], capsize=3, ms=6)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    lines = rec.side_file(REFERENCE_LINES)
    style.reference_lines(ax, lines, vertical=True)
    if lines:
        ax.legend(fontsize=7, loc="lower right")
    seeds = int(table["seeds"].max())
    ax.set(
        xlabel="final validation loss (nats)",
        title=f"The ladder (mean, 95% t-interval, {seeds} seed{'s' if seeds > 1 else ''})",
    )
    return fig


def memory_vs_perplexity(rec: RunSet):
    """Optimizer state against perplexity: these runs (measured) and the paper at 1B."""
    table = summary(rec.results)
    table = table[np.isfinite(table["perplexity"])]
    fig, (left, right) = style.figure(2)
    colours = style.palette(style.ordered(list(table.index) + list(paper.PERPLEXITY["1b"])))
    # a legend per panel, not labels at the points: nearby points' labels collided
    for label, row in table.iterrows():
        left.scatter(row["state_mb"], row["perplexity"], color=colours[label], s=40, label=label)
    left.set(
        yscale="log",
        xlabel="optimizer state (MB, measured)",
        ylabel="validation perplexity",
        title="These runs",
    )
    left.legend(fontsize=7, ncols=2)
    for label, ppl in paper.PERPLEXITY["1b"].items():
        right.scatter(analytic_terms(label, "1b")[1], ppl, color=colours[label], s=40, label=label)
    right.set(
        xlabel="optimizer state (GB, bf16, paper's accounting)",
        ylabel="C4 perplexity",
        title="The paper at 1B",
    )
    right.legend(fontsize=7, ncols=2)
    return fig


def momentum_quadratic(rec: RunSet | None = None, steps: int = 600, sigma: float = 0.3, lrs=(0.3, 1.0)):
    """SGD vs EMA momentum (beta 0.9) on the noisy quadratic; dotted lines: exact noise floors."""

    fig, (ax,) = style.figure(width=6)
    for lr, dash in zip(lrs, ("-", "-.")):
        for beta, colour in ((0.0, "#7f7f7f"), (0.9, "#d62728")):
            curve = quadratic.run(steps=steps, lr=lr, beta=beta, sigma=sigma)
            name = "SGD" if beta == 0 else f"EMA momentum {beta}"
            ax.plot(curve, dash, color=colour, label=f"{name}, lr {lr:g}", lw=1.2)
            ax.axhline(
                quadratic.ema_floor(lr, beta, sigma),
                color=colour,
                ls=":",
                lw=1,
                label=f"exact floor of {name}, lr {lr:g}",
            )
    ax.set(
        yscale="log",
        xlabel="step",
        ylabel="expected loss (64 noise draws)",
        title="Noisy quadratic: momentum lowers the noise floor",
    )
    ax.legend(fontsize=7, ncols=2)
    return fig


REGISTRY = {
    f.__name__: f
    for f in (
        grad_variance_by_layer,
        grad_variance_with_momentum,
        loss_curves,
        lr_sweep,
        normalization_ablation,
        column_norm_stats,
        update_spectra,
        memory_vs_perplexity,
        momentum_quadratic,
        sgd_vs_normalized,
        momentum_placement,
        output_entry_histogram,
    )
}
# drawn without recordings (from the model or the quadratic alone)
SELF_CONTAINED = ("momentum_quadratic", "output_entry_histogram")


def show(name: str, rec: RunSet | None = None, **kwargs) -> None:
    """Draw figure ``name`` in a notebook with its one-line caption beneath it
    (``analysis.results.captions``): what the reader should look at, as in ``report.md``."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    fig = REGISTRY[name](rec, **kwargs)
    display(fig)
    plt.close(fig)  # shown once: the cell's own display of open figures would repeat it
    display(Markdown(f"*{CAPTIONS[name]}*"))


def render_all(root, out_dir, names=None) -> tuple[list[Path], list[str]]:
    """Render ``names`` (default: all) from the runs under ``root``; (written paths, problems)."""
    names = list(names or REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise MissingData(f"unknown figure(s) {unknown}; choose from {', '.join(REGISTRY)}")
    try:
        rec = RunSet(root)
    except RecordingError as err:
        rec, problems = None, [str(err)]
    else:
        problems = []
    made = []
    for name in names:
        if rec is None and name not in SELF_CONTAINED:
            problems.append(f"{name}: needs recordings ({problems[0]})")
            continue
        try:
            made += style.save(REGISTRY[name](rec), out_dir, name)
        except (MissingData, RecordingError) as err:
            problems.append(f"{name}: {err}")
    return made, problems


def main(argv: list[str] | None = None) -> int:
    """``scale-lab figures``: render the registry; 0 if all drawn, 1 if some, 2 if none."""
    p = Parser(prog="scale-lab figures", description="Render the figure registry.")
    p.add_argument(
        "--runs", default=str(REFERENCE), help="directory of run directories (default: the shipped reference)"
    )
    p.add_argument("--out", default="figures", help="where PNG and PDF files go")
    p.add_argument("--only", nargs="+", default=None, help=f"subset of: {' '.join(REGISTRY)}")
    args = p.parse_args(argv)
    try:
        unknown = [n for n in args.only or () if n not in REGISTRY]
        if unknown:
            raise MissingData(f"unknown figure(s) {unknown}; choose from {', '.join(REGISTRY)}")
        if set(args.only or REGISTRY) - set(SELF_CONTAINED):
            RunSet(args.runs)  # one line when there is nothing to draw from
        made, problems = render_all(args.runs, args.out, args.only)
    except (MissingData, RecordingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    if set(args.only or REGISTRY) - set(SELF_CONTAINED):
        for note in RunSet(args.runs).bad_row_notes():
            print(note, file=sys.stderr)
    if Path(args.runs).exists():
        for path, reason in scan_runs(args.runs)[1]:
            print(f"not used: {path} ({reason})", file=sys.stderr)
    print(f"wrote {len(made) // 2} figures ({len(made)} files) to {args.out}")
    return 0 if made and not problems else (1 if made else 2)


if __name__ == "__main__":
    raise SystemExit(main())
