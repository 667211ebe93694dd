"""From per-matrix gradient variance to a momentum placement under a memory budget.

The prediction is the paper's Theorem 2.1 (arXiv 2506.16659) read as ``analysis.results.theory``
reads it: an EMA with coefficient ``beta`` keeps the share ``(1 - beta) / (1 + beta)`` of
independent noise's variance, so momentum on matrix ``m`` removes

    gain_m = (1 - (1 - beta) / (1 + beta)) * sigma_m^2

from the bound, at the cost of one buffer of the matrix's size (``bytes``). Matrices are grouped
(each matrix, each block, each layer type across blocks, or each role) and the best placement
under a budget is the exact 0/1 knapsack over the groups (``scipy.optimize.milp``, HiGHS):

    maximize sum_j gain_j x_j   subject to   sum_j bytes_j x_j <= budget,  x_j in {0, 1}

``curve`` solves it at every budget from nothing to every matrix, the predicted gain against
the optimizer state in bytes (the vectors' Adam state included, as every ladder recipe keeps
it), with SCALE (the output layer), col_norm+all (every matrix) and AdamW (two buffers of every
parameter) marked. A prediction, not a measurement: ``analysis.advice.verify`` checks it.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from analysis.results.theory import kept_fraction

GROUPINGS = ("matrix", "block", "type", "role")


def predicted_gains(matrices: pd.DataFrame, beta: float = 0.9) -> pd.DataFrame:
    """``matrices`` (``probe``'s rows) with ``gain`` (Theorem 2.1's weight times ``sigma2``) and
    ``gain_std`` (the same of the seeds' spread)."""
    weight = 1 - kept_fraction(beta)
    return matrices.assign(gain=weight * matrices["sigma2"], gain_std=weight * matrices["sigma2_std"])


def groups(matrices: pd.DataFrame, by: str = "block") -> pd.DataFrame:
    """The matrices summed per group (``by``: matrix, block, type or role), each with the
    ``momentum_on`` patterns that name its matrices (exact names; a type's is one glob over
    every block). Sorted by predicted gain per byte."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
    key = {"matrix": "name", "block": "block", "type": "type", "role": "role"}[by]
    rows = []
    for value, part in matrices.groupby(key, sort=False):
        patterns = [value] if by == "type" and "*" in value else list(part["name"])
        rows.append(
            {
                "group": value,
                "roles": ",".join(dict.fromkeys(part["role"])),
                "matrices": len(part),
                "bytes": int(part["bytes"].sum()),
                "gain": float(part["gain"].sum()),
                "gain_std": float(np.sqrt((part["gain_std"].fillna(0) ** 2).sum())),
                "patterns": patterns,
            }
        )
    frame = pd.DataFrame(rows)
    return frame.assign(gain_per_mb=frame["gain"] / (frame["bytes"] / 1e6)).sort_values(
        "gain_per_mb", ascending=False, ignore_index=True
    )


def best_under(table: pd.DataFrame, budget_bytes: float) -> list[int]:
    """The rows of ``table`` (``groups``) whose momentum buffers fit ``budget_bytes`` with the
    largest predicted gain: the exact 0/1 knapsack (``scipy.optimize.milp``)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    fits = table.index[table["bytes"] <= budget_bytes].tolist()
    if not fits or budget_bytes <= 0:
        return []
    gain = table.loc[fits, "gain"].to_numpy(float)
    cost = table.loc[fits, "bytes"].to_numpy(float)
    scale = cost.max()  # bytes scaled to ~1 keeps HiGHS's tolerances meaningful
    result = milp(
        -gain,
        constraints=LinearConstraint(cost[None, :] / scale, -np.inf, budget_bytes / scale),
        integrality=np.ones(len(fits)),
        bounds=Bounds(0, 1),
    )
    if not result.success:
        raise RuntimeError(f"the knapsack solver failed: {result.message}")
    return [fits[i] for i, x in enumerate(result.x) if x > 0.5]


def marks(matrices: pd.DataFrame, vector_bytes: int) -> dict[str, tuple[int, float]]:
    """``{name: (state bytes, predicted gain)}`` of the placements a researcher knows: col_norm
    (none), SCALE (the output layer), col_norm+all (every matrix), and AdamW's state (two
    buffers of every parameter; its gain is not this prediction's, NaN)."""
    output = matrices[matrices["role"] == "output"]
    every = int(matrices["bytes"].sum())
    return {
        "col_norm": (2 * vector_bytes, 0.0),
        "scale": (2 * vector_bytes + int(output["bytes"].sum()), float(output["gain"].sum())),
        "col_norm+all": (2 * vector_bytes + every, float(matrices["gain"].sum())),
        "adamw": (2 * (every + vector_bytes), math.nan),
    }


def curve(table: pd.DataFrame, vector_bytes: int, points: int = 41) -> pd.DataFrame:
    """The best predicted gain at ``points`` budgets from none to every group's buffers (and at
    each group's own cost, so no step of the frontier is missed when groups are few): rows
    ``state_bytes``, ``gain``, ``groups`` (the chosen group names)."""
    total = int(table["bytes"].sum())
    budgets = sorted(
        set(np.linspace(0, total, points).round().astype(int)) | set(np.cumsum(sorted(table["bytes"])))
    )
    rows = []
    for budget in budgets:
        chosen = best_under(table, budget)
        rows.append(
            {
                "state_bytes": 2 * vector_bytes + int(table.loc[chosen, "bytes"].sum()),
                "gain": float(table.loc[chosen, "gain"].sum()),
                "groups": [table.loc[i, "group"] for i in chosen],
            }
        )
    return pd.DataFrame(rows).drop_duplicates("state_bytes", ignore_index=True)


def parse_budget(budget: float | str, adamw_bytes: int) -> float:
    """A budget in bytes from a fraction of AdamW's state (``0.3``) or a size (``"12MB"``,
    ``"1.5GB"``, ``"800kB"``); ``ValueError`` naming the forms otherwise."""
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        value, unit = float(budget), None
    else:
        match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(kB|KB|MB|GB|B)?\s*", str(budget))
        if not match:
            raise ValueError(
                f"budget {budget!r}: give a fraction of AdamW's state (0.3) or a size (12MB, 1.5GB)"
            )
        value, unit = float(match.group(1)), match.group(2)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"budget {budget!r} must be a finite number >= 0")
    if unit is None:
        return value * adamw_bytes
    return value * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
