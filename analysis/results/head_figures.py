"""The per-head view (``analysis.instrument.heads``): is some attention head much noisier than
the others of its matrix? Drawn from runs recorded with ``InstrumentConfig(per_head=True)``;
not in the figure registry while the shipped reference records no heads."""

from __future__ import annotations

import numpy as np

from analysis.results import style
from analysis.results.run_set import MissingData, RunSet

STAT = "grad_var_head"


def per_head_variance(rec: RunSet, label: str | None = None):
    """Heat map: each attention matrix (rows) by head (columns), the head's gradient variance
    over the mean head's of that matrix, time-averaged (1: as noisy as the average head)."""
    frame = rec.metrics
    rows = frame[(frame["stat"] == STAT)]
    if label is not None:
        rows = rows[rows["label"] == label]
    if rows.empty:
        raise MissingData(
            f"no {STAT!r} rows under {rec.root}: record attention heads with InstrumentConfig(per_head=True)"
        )
    parts = rows["param"].str.extract(r"^(?P<matrix>.+)/head(?P<head>\d+)$")
    rows = rows.assign(matrix=parts["matrix"], head=parts["head"].astype(int))
    mean = rows.groupby(["matrix", "head"])["value"].mean().unstack("head")
    ratio = mean.div(mean.mean(axis=1), axis=0)
    spread = float(np.nanmax(ratio.to_numpy()) / max(np.nanmin(ratio.to_numpy()), 1e-300))
    fig, (ax,) = style.figure(1, width=3.5 + 0.5 * ratio.shape[1], height=1.6 + 0.3 * len(ratio))
    image = ax.imshow(ratio.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.grid(False)
    ax.set_xticks(range(ratio.shape[1]), [str(h) for h in ratio.columns])
    names = [
        m.replace("model.layers.", "L").replace(".self_attn.", " ").replace(".weight", "")
        for m in ratio.index
    ]
    ax.set_yticks(range(len(ratio)), names)
    ax.set(
        xlabel="head",
        title=f"Gradient variance per head / its matrix's mean head\n"
        f"(noisiest over quietest head: {spread:.1f}x)",
    )
    fig.colorbar(image, ax=ax, label="ratio (time-averaged)")
    return fig
