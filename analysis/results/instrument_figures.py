"""Figures of the instrumentation's recordings (``analysis.instrument``): gradient variance per
layer role over training (the paper's Figure 4a, and 4b with output momentum, arXiv
2506.16659), the spread of per-unit update norms with the output layer's gradient row RMS
against token frequency, and update spectra. Registered in ``analysis.results.figures``.
"""

from __future__ import annotations

import numpy as np

from analysis.results import style
from analysis.results.run_set import MissingData, RunSet, hidden_spectrum, spectrum_ranks
from analysis.results.stats import log_band, role_variance


def _variance(rec: RunSet, label: str, title: str):
    import seaborn as sns

    fig, axes = style.figure(2)
    for ax, stat, ylabel in zip(
        axes, ("grad_var", "grad_var_rel"), ("E||g_b - g||^2 per layer", "relative: E||g_b - g||^2 / ||g||^2")
    ):
        frame = role_variance(rec.stat(stat, labels=[label]), stat)
        frame = frame[frame["step"] > 0]
        roles = [r for r in style.ROLE_ORDER if r in set(frame["role"])]
        sns.lineplot(
            frame,
            x="step",
            y="value",
            hue="role",
            hue_order=roles,
            palette=style.role_palette(roles),
            errorbar=log_band,
            ax=ax,
            legend=ax is axes[0],
        )
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


def column_norm_stats(rec: RunSet):
    """Left: coefficient of variation of the per-unit update RMS per role and arm; right:
    output-layer gradient row RMS against token frequency."""
    import seaborn as sns

    cv = rec.stat("update_row_rms_cv")
    last = cv[cv["step"] == cv.groupby("run")["step"].transform("max")]
    fig, (left, right) = style.figure(2)
    labels = style.ordered(last["label"])
    roles = [r for r in style.ROLE_ORDER if r in set(last["role"])]
    sns.barplot(
        last,
        y="label",
        x="value",
        hue="role",
        order=labels,
        hue_order=roles,
        palette=style.role_palette(roles),
        errorbar=None,
        ax=left,
        orient="h",
    )
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
        raise MissingData(
            "no output-layer `grad_row_rms` / `token_frequency` vectors; they are "
            "recorded on the `rows` schedule with instrumentation on"
        )
    # the SCALE run when there is one (the optimizer the panel is about), else the last run
    scale = rows[rows["label"] == "scale"]
    run = (scale if len(scale) else rows)["run"].iloc[-1]
    counts = np.asarray(freq[freq["run"] == run]["values"].iloc[0], dtype=float)
    first = rows[rows["run"] == run].sort_values("step").iloc[0]
    rms = np.asarray(first["values"], dtype=float)
    seen = counts > 0
    left_label = rows[rows["run"] == run]["label"].iloc[0]
    right.scatter(counts[seen], rms[seen], s=3, alpha=0.4, color=style.palette([left_label])[left_label])
    right.set(
        xscale="log",
        yscale="log",
        xlabel="token count in the training split",
        ylabel="output-layer gradient row RMS",
        title=f"Output rows vs frequency ({left_label}, step {int(first['step'])})",
    )
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
        left.plot(
            ranks if ranks is not None else np.arange(1, len(values) + 1),
            values,
            label=label,
            color=colours[label],
        )
    left.set(
        xscale="log",
        yscale="log",
        ylabel="sigma_i / sigma_1",
        xlabel="rank i" if known else "kept value (ranks unknown: log-spaced subset)",
        title=f"Update spectrum: {name.replace('model.', '')}",
    )
    left.legend(fontsize=7, ncols=2)
    rank = rec.stat("update_stable_rank")
    rank = rank[rank["role"] == "hidden"].groupby(["run", "label", "step"], as_index=False)["value"].mean()
    sns.lineplot(
        rank,
        x="step",
        y="value",
        hue="label",
        hue_order=style.ordered(rank["label"]),
        palette=style.palette(style.ordered(rank["label"])),
        errorbar=None,
        ax=right,
        legend=False,
    )
    right.set(
        yscale="log",
        xlabel="optimizer step",
        ylabel="stable rank ||U||_F^2 / ||U||_2^2",
        title="Stable rank of hidden updates",
    )
    return fig
