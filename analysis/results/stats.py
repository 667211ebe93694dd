"""Final results over seeds: one row per run, per-arm summaries, Student-t intervals.

Intervals are Student-t 95%: ``mean +- t(0.975, n-1) s / sqrt(n)``; a difference between two
arms is paired by seed (same data order and init). With one seed there is no interval.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.recording import RecordingError, load_result, run_settings
from analysis.results.root import scan_runs
from analysis.results.style import ordered


def interval(values) -> tuple[float, float]:
    """Mean and Student-t 95% half-width (nan with fewer than two finite values)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def t_band(values) -> tuple[float, float]:
    """The 95% Student-t interval as ``(low, high)``: the band a figure draws, so it is the
    interval the report prints (a seaborn ``errorbar`` callable)."""
    mean, half = interval(list(values))
    return mean - half, mean + half


def log_band(values) -> tuple[float, float]:
    """``t_band`` for a log axis: a lower end at or below 0 (a wide interval of a positive
    quantity) is drawn at a tenth of the mean, so the band shows a decade of doubt instead of
    diving off the axis; the upper end is the interval's."""
    low, high = t_band(values)
    mean = (low + high) / 2
    return (low if low > 0.1 * mean else 0.1 * mean), high


def fmt(mean: float, half: float, digits: int = 3) -> str:
    """``mean +- half`` (just the mean without an interval; n/a when not finite)."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" +- {half:.{digits}f}" if math.isfinite(half) else "")


def unused_runs(root: str | Path) -> list[tuple[Path, str]]:
    """Every run-like directory below ``root`` that the results leave out, with the reason."""
    used, skipped = scan_runs(root)
    return skipped + [(run, "unfinished (no result.json)") for run in used if load_result(run) is None]


def final_results(root: str | Path) -> pd.DataFrame:
    """One row per reported, finished run below ``root``: label, seed, lr, losses, state bytes,
    status (``unused_runs`` names the others)."""
    rows = []
    for run in scan_runs(root)[0]:
        result = load_result(run)
        if result is None:
            continue  # unfinished: not a result yet (named by unused_runs)
        config = run_settings(run)  # a resume may have changed steps or lr (segments.jsonl)
        loss = result.get("final_eval_loss", math.nan)
        rows.append(
            {
                "run": str(run),
                "label": config.get("label") or config.get("optimizer"),
                "optimizer": config.get("optimizer"),
                "momentum": config.get("momentum"),
                "model": config.get("model"),
                "seed": config.get("seed"),
                "lr": config.get("lr"),
                "steps": config.get("steps"),
                "tokens": result.get("tokens")
                or (config.get("steps", 0) * config.get("batch_size", 0) * config.get("seq_len", 0)),
                "first_eval_loss": result.get("first_eval_loss", math.nan),
                "final_eval_loss": math.nan if loss is None else float(loss),
                "diverged_at": result.get("diverged_at"),
                "state_bytes": result.get("optimizer_state_bytes", math.nan),
            }
        )
    if not rows:
        raise RecordingError(
            f"no finished runs under {root}{_listing(unused_runs(root))}; run `scale-lab reproduce` first"
        )
    return pd.DataFrame(rows)


def _listing(unused) -> str:
    return (
        ""
        if not unused
        else " (found and not used: " + "; ".join(f"{path}: {reason}" for path, reason in unused) + ")"
    )


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per arm: seeds, diverged runs, lr, mean loss and interval, perplexity, state MB."""
    rows = []
    for label in ordered(results["label"]):
        part = results[results["label"] == label]
        mean, half = interval(part["final_eval_loss"])
        rows.append(
            {
                "label": label,
                "seeds": len(part),
                "diverged": int(part["diverged_at"].notna().sum()),
                "lr": part["lr"].iloc[0],
                "loss": mean,
                "loss_ci": half,
                "perplexity": math.exp(mean) if math.isfinite(mean) else math.nan,
                "state_mb": part["state_bytes"].mean() / 1e6,
            }
        )
    return pd.DataFrame(rows).set_index("label")


def separated(mean: float, half: float) -> bool:
    """Does the interval ``mean +- half`` exclude 0 (a difference the seeds resolve)?"""
    return math.isfinite(mean) and math.isfinite(half) and abs(mean) > half


def paired(results: pd.DataFrame, a: str, b: str) -> tuple[float, float, int]:
    """Mean and 95% half-width of loss(a) - loss(b), paired by seed, and the seeds paired."""
    pa = results[results["label"] == a].set_index("seed")["final_eval_loss"]
    pb = results[results["label"] == b].set_index("seed")["final_eval_loss"]
    both = (pa - pb).dropna()
    mean, half = interval(both.tolist())
    return mean, half, len(both)


def role_variance(frame: pd.DataFrame, stat: str = "grad_var_rel") -> pd.DataFrame:
    """Role-mean of a per-parameter statistic at each recorded step, per run: tidy rows."""
    rows = frame[(frame["stat"] == stat) & frame["param"].notna()]
    if rows.empty:
        raise RecordingError(
            f"no {stat!r} rows: record with instrumentation on "
            "(`scale-lab train --instrument` or `scale-lab reproduce`)"
        )
    # dropna=False: a run recorded from a user's own loop has no seed
    return rows.groupby(["run", "label", "seed", "step", "role"], as_index=False, dropna=False)[
        "value"
    ].mean()
