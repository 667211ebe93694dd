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

and the figures of the paper's argument from ``analysis.results.argument_figures``
(``sgd_vs_normalized``, ``momentum_placement``, ``output_entry_histogram``). In a notebook,
``show(name, rec)`` draws one with its caption (``analysis.results.captions``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from analysis.arguments import Parser
from analysis.recording import REFERENCE_LINES, TUNING, RecordingError, scan_runs
from analysis.results import paper, style
from analysis.results.argument_figures import momentum_placement, output_entry_histogram, sgd_vs_normalized
from analysis.results.captions import CAPTIONS
from analysis.results.memory import analytic_terms
from analysis.results.run_set import (
    REFERENCE,
    MissingData,
    RunSet,
    hidden_spectrum,
    spectrum_ranks,
)
from analysis.results.stats import log_band, role_variance, summary, t_band
from toy_models import quadratic


def _variance(rec: RunSet, label: str, title: str):
    import seaborn as sns

    fig, axes = style.figure(2)
    for ax, stat, ylabel in zip(axes, ("grad_var", "grad_var_rel"),
                                ("E||g_b - g||^2 per layer", "relative: E||g_b - g||^2 / ||g||^2")):
        frame = role_variance(rec.stat(stat, labels=[label]), stat)
        frame = frame[frame["step"] > 0]
        roles = [r for r in style.ROLE_ORDER if r in set(frame["role"])]
        sns.lineplot(frame, x="step", y="value", hue="role", hue_order=roles,
                     palette=style.role_palette(roles), errorbar=log_band, ax=ax,
                     legend=ax is axes[0])
        ax.set(yscale="log", xlabel="optimizer step", ylabel=ylabel)
    axes[0].legend(title="layer role")
    fig.suptitle(title, fontweight="bold")
    return fig


def grad_variance_by_layer(rec: RunSet, label: str | None = None):
    """Gradient variance per role (mean over a role's matrices), micro-batch estimator:
    left the paper's per-layer discrepancy ``E||g_b - g||^2``, right divided by ``||g||^2``.
    ``label``: the arm (default ``col_norm``, the paper's; else the first arm recorded, so a
    recording of any model and optimizer draws)."""
    if label is None:
        recorded = style.ordered(rec.stat("grad_var")["label"])
        label = "col_norm" if "col_norm" in recorded else recorded[0]
    return _variance(rec, label, f"Gradient variance by layer ({label})")


def grad_variance_with_momentum(rec: RunSet, label: str = "scale"):
    """As ``grad_variance_by_layer`` for the ``scale`` runs (output-layer momentum; paper 4b)."""
    return _variance(rec, label, f"Gradient variance by layer ({label}: output momentum)")


def _mark_divergence(ax, evals, colours) -> None:
    """A validation loss recorded as non-finite (null) is drawn as an x on the panel's top edge
    at its step, labelled, instead of vanishing from the line."""
    bad = evals[evals["value"].isna()]
    for (_run, label), rows in bad.groupby(["run", "label"]):
        step = rows["step"].min()
        ax.plot([step], [1.0], marker="X", markersize=9, color=colours.get(label, "0.2"),
                transform=ax.get_xaxis_transform(), clip_on=False, linestyle="none")
        ax.annotate(f"{label} diverged", (step, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, -12), textcoords="offset points", ha="right", fontsize=7,
                    color=colours.get(label, "0.2"))


def loss_curves(rec: RunSet):
    """Training loss (10-step running mean) and validation loss of every arm over steps."""
    import seaborn as sns

    train = rec.stat("loss", per_param=False).copy()
    try:
        evals = rec.stat("eval_loss", per_param=False)
    except MissingData:   # a user's loop may record no validation loss
        evals = train.iloc[0:0]
    labels = style.ordered(train["label"])
    colours = style.palette(labels)
    fig, (left, right) = style.figure(2)
    # a 10-step running mean per run makes the ladder readable without hiding divergence
    train["smoothed"] = train.groupby("run")["value"].transform(lambda v: v.rolling(10, 1).mean())
    sns.lineplot(train, x="step", y="smoothed", hue="label", hue_order=labels, palette=colours,
                 errorbar=None, ax=left, legend=False)
    if evals.empty:
        right.text(0.5, 0.5, "no validation loss recorded", ha="center", va="center",
                   transform=right.transAxes, color="0.4")
    else:
        sns.lineplot(evals, x="step", y="value", hue="label", hue_order=labels, palette=colours,
                     errorbar=t_band, marker="o", ax=right)
        _mark_divergence(right, evals, colours)
    left.set(xlabel="optimizer step", ylabel="train loss (10-step mean)", title="Training loss")
    right.set(xlabel="optimizer step", ylabel="validation loss", title="Validation loss")
    lines = rec.side_file(REFERENCE_LINES)
    style.reference_lines(left, lines, label=False)
    style.reference_lines(right, lines, label=False)
    for name, value in (lines or {}).items():
        if name in style.REFERENCE_LINE_STYLES:
            right.annotate(f"{name} {value:.2f}", (0.99, value), xycoords=("axes fraction", "data"),
                           ha="right", va="bottom", fontsize=7, color="0.3")
    _highlight(colours, "scale", left, right)
    if not evals.empty:   # beside the panels, not over the curves
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
    end would be an optimum at the grid's edge)."""
    tuning = rec.side_file(TUNING)
    if tuning is None:
        raise MissingData(f"no {TUNING} under {rec.root}: the tuned preset writes it "
                          "(`scale-lab reproduce --preset reference`)")
    labels = style.ordered(tuning["arms"])
    colours = style.palette(labels)
    fig, (ax,) = style.figure(width=7.5, height=4.2)
    for label in labels:
        row = tuning["arms"][label]
        lrs = [float(lr) for lr in row["grid"]]
        losses = np.array([[np.nan if v is None or not np.isfinite(v) else v for v in seeds]
                           for seeds in row["grid"].values()], dtype=float)
        ax.plot(lrs, np.nanmean(losses, axis=1), color=colours[label], label=label, marker=".")
        for k in range(losses.shape[1]):
            ax.scatter(lrs, losses[:, k], color=colours[label], s=8, alpha=0.5)
        if row["best"] is not None:
            best = np.nanmean(losses[lrs.index(row["best"])])
            ax.scatter([row["best"]], [best], s=90, facecolors="none", edgecolors=colours[label])
    ax.set(xscale="log", xlabel="peak learning rate of the matrices",
           ylabel="final validation loss",
           title=f"lr tuning at the reported length ({tuning['steps']} steps, seeds "
                 f"{', '.join(map(str, tuning['tune_seeds']))})")
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
    ax.set(xlabel="final validation loss (nats)",
           title=f"The ladder (mean, 95% t-interval, {seeds} seed{'s' if seeds > 1 else ''})")
    return fig


def column_norm_stats(rec: RunSet):
    """Left: coefficient of variation of the per-unit update RMS per role and arm; right:
    output-layer gradient row RMS against token frequency."""
    import seaborn as sns

    cv = rec.stat("update_row_rms_cv")
    last = cv[cv["step"] == cv.groupby("run")["step"].transform("max")]
    fig, (left, right) = style.figure(2)
    labels = style.ordered(last["label"])
    roles = [r for r in style.ROLE_ORDER if r in set(last["role"])]
    sns.barplot(last, y="label", x="value", hue="role", order=labels, hue_order=roles,
                palette=style.role_palette(roles), errorbar=None, ax=left, orient="h")
    # a spread of 0 (every unit normalized) draws no bar: mark it, so no arm looks unrecorded
    colours = style.role_palette(roles)
    for role, bars in zip(roles, left.containers):
        for bar in bars:
            if bar.get_width() < 1e-6:
                left.plot(0, bar.get_y() + bar.get_height() / 2, "o", mfc="white", mec=colours[role], ms=4)
    left.plot([], [], "o", mfc="white", mec="0.3", ms=4, label="0: equal by construction")
    left.set(ylabel="", xlabel="CV of per-unit update RMS", title="Spread of update norms across units")
    left.legend(fontsize=7, title="role", title_fontsize=7)
    vectors = rec.vectors
    freq = vectors[vectors["stat"] == "token_frequency"]
    rows = vectors[(vectors["stat"] == "grad_row_rms") & (vectors["role"] == "output")]
    if freq.empty or rows.empty:
        raise MissingData("no output-layer `grad_row_rms` / `token_frequency` vectors; they are "
                          "recorded on the `rows` schedule with instrumentation on")
    # the SCALE run when there is one (the optimizer the panel is about), else the last run
    scale = rows[rows["label"] == "scale"]
    run = (scale if len(scale) else rows)["run"].iloc[-1]
    counts = np.asarray(freq[freq["run"] == run]["values"].iloc[0], dtype=float)
    first = rows[rows["run"] == run].sort_values("step").iloc[0]
    rms = np.asarray(first["values"], dtype=float)
    seen = counts > 0
    left_label = rows[rows["run"] == run]["label"].iloc[0]
    right.scatter(counts[seen], rms[seen], s=3, alpha=0.4, color=style.palette([left_label])[left_label])
    right.set(xscale="log", yscale="log", xlabel="token count in the training split",
              ylabel="output-layer gradient row RMS",
              title=f"Output rows vs frequency ({left_label}, step {int(first['step'])})")
    return fig


def update_spectra(rec: RunSet):
    """Left: normalized singular values of one hidden matrix's last update per arm; right:
    stable rank of hidden updates over training."""
    import seaborn as sns

    name, chosen = hidden_spectrum(rec)
    fig, (left, right) = style.figure(2)
    chosen = chosen[chosen["step"] == chosen.groupby("run")["step"].transform("max")]
    labels = style.ordered(chosen["label"])
    colours = style.palette(labels)
    known = True
    for label in labels:
        row = chosen[chosen["label"] == label].iloc[0]
        values = np.asarray(row["values"], dtype=float)
        ranks = spectrum_ranks(rec, row["run"], name, len(values))
        known &= ranks is not None
        left.plot(ranks if ranks is not None else np.arange(1, len(values) + 1), values,
                  label=label, color=colours[label])
    left.set(xscale="log", yscale="log", ylabel="sigma_i / sigma_1",
             xlabel="rank i" if known else "kept value (ranks unknown: log-spaced subset)",
             title=f"Update spectrum: {name.replace('model.', '')}")
    left.legend(fontsize=7, ncols=2)
    rank = rec.stat("update_stable_rank")
    rank = rank[rank["role"] == "hidden"].groupby(["run", "label", "step"], as_index=False)["value"].mean()
    sns.lineplot(rank, x="step", y="value", hue="label", hue_order=style.ordered(rank["label"]),
                 palette=style.palette(style.ordered(rank["label"])), errorbar=None, ax=right, legend=False)
    right.set(yscale="log", xlabel="optimizer step", ylabel="stable rank ||U||_F^2 / ||U||_2^2",
              title="Stable rank of hidden updates")
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
    left.set(yscale="log", xlabel="optimizer state (MB, measured)", ylabel="validation perplexity",
             title="These runs")
    left.legend(fontsize=7, ncols=2)
    for label, ppl in paper.PERPLEXITY["1b"].items():
        right.scatter(analytic_terms(label, "1b")[1], ppl, color=colours[label], s=40, label=label)
    right.set(xlabel="optimizer state (GB, bf16, paper's accounting)", ylabel="C4 perplexity",
              title="The paper at 1B")
    right.legend(fontsize=7, ncols=2)
    return fig


def momentum_quadratic(rec: RunSet | None = None, steps: int = 600, sigma: float = 0.3,
                       lrs=(0.3, 1.0)):
    """SGD vs EMA momentum (beta 0.9) on the noisy quadratic; dotted lines: exact noise floors."""

    fig, (ax,) = style.figure(width=6)
    for lr, dash in zip(lrs, ("-", "-.")):
        for beta, colour in ((0.0, "#7f7f7f"), (0.9, "#d62728")):
            curve = quadratic.run(steps=steps, lr=lr, beta=beta, sigma=sigma)
            name = "SGD" if beta == 0 else f"EMA momentum {beta}"
            ax.plot(curve, dash, color=colour, label=f"{name}, lr {lr:g}", lw=1.2)
            ax.axhline(quadratic.ema_floor(lr, beta, sigma), color=colour, ls=":", lw=1,
                       label=f"exact floor of {name}, lr {lr:g}")
    ax.set(yscale="log", xlabel="step", ylabel="expected loss (64 noise draws)",
           title="Noisy quadratic: momentum lowers the noise floor")
    ax.legend(fontsize=7, ncols=2)
    return fig


REGISTRY = {f.__name__: f for f in (grad_variance_by_layer, grad_variance_with_momentum,
                                    loss_curves, lr_sweep, normalization_ablation, column_norm_stats,
                                    update_spectra, memory_vs_perplexity, momentum_quadratic,
                                    sgd_vs_normalized, momentum_placement, output_entry_histogram)}
# drawn without recordings (from the model or the quadratic alone)
SELF_CONTAINED = ("momentum_quadratic", "output_entry_histogram")


def show(name: str, rec: RunSet | None = None, **kwargs) -> None:
    """Draw figure ``name`` in a notebook with its one-line caption beneath it
    (``analysis.results.captions``): what the reader should look at, as in ``report.md``."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    fig = REGISTRY[name](rec, **kwargs)
    display(fig)
    plt.close(fig)   # shown once: the cell's own display of open figures would repeat it
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
    p.add_argument("--runs", default=str(REFERENCE),
                   help="directory of run directories (default: the shipped reference)")
    p.add_argument("--out", default="figures", help="where PNG and PDF files go")
    p.add_argument("--only", nargs="+", default=None, help=f"subset of: {' '.join(REGISTRY)}")
    args = p.parse_args(argv)
    try:
        unknown = [n for n in args.only or () if n not in REGISTRY]
        if unknown:
            raise MissingData(f"unknown figure(s) {unknown}; choose from {', '.join(REGISTRY)}")
        if set(args.only or REGISTRY) - set(SELF_CONTAINED):
            RunSet(args.runs)   # one line when there is nothing to draw from
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
