"""The variance claims (1 and 2 of ``analysis.results.claims``): which layer is noisiest, and
the paper's Figure 4b at matched training loss (arXiv 2506.16659). ``Claim`` is the record every
claim returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.recording import run_settings
from analysis.results.stats import fmt, interval

MOST_PROBES = 0.8  # claim 1: the ranking at >= 80% of the probe steps after warmup
MATCHED_LEVELS = 5  # claim 2: training-loss levels the variances are compared at


@dataclass
class Claim:
    """One claim as checked: rule, verdict, our numbers, the paper's.

    Three-way: ``held`` True ("held") or False ("did not hold": only when the interval
    excludes what the claim states); None with ``inconclusive`` ("inconclusive": the numbers
    cannot decide it), None alone ("not checked": the runs it reads are missing)."""

    title: str
    rule: str
    held: bool | None
    evidence: str
    paper: str = ""
    inconclusive: bool = False

    @property
    def verdict(self) -> str:
        if self.held is None and self.inconclusive:
            return "inconclusive"
        return {True: "held", False: "did not hold", None: "not checked"}[self.held]


def three_way(title: str, rule: str, holds: bool, fails: bool, evidence: str, paper: str = "") -> Claim:
    """A claim decided by an interval: held, did not hold, or inconclusive when neither."""
    return Claim(
        title,
        rule,
        True if holds else False if fails else None,
        evidence,
        paper,
        inconclusive=not (holds or fails),
    )


def _warmup(root: Path, run: str) -> int:
    return run_settings(root / run).get("warmup_steps") or 0


def after_warmup(frame: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """The rows of ``frame`` (``load_runs(root)``) recorded after each run's own warmup."""
    root = Path(root)
    if frame.empty:
        return frame
    warm = {run: _warmup(root, run) for run in frame["run"].unique()}
    return frame[frame["step"] > frame["run"].map(warm)]


def _rank_share(rows: pd.DataFrame) -> tuple[float, list[str]]:
    """Of the steps in ``rows`` (role means per step, over runs), the share at which output is
    first and embedding second, and the time-averaged ranking."""
    per_step = rows.groupby(["step", "role"])["value"].mean().unstack()
    if per_step.empty or not {"output", "embedding"} <= set(per_step.columns):
        return math.nan, []
    ranks = per_step.apply(
        lambda r: list(r.sort_values(ascending=False).index[:2]) == ["output", "embedding"], axis=1
    )
    return float(ranks.mean()), list(per_step.mean().sort_values(ascending=False).index)


DEFINITIONS = {
    "total (probe)": "probe_var",
    "per entry (micro-batch)": "grad_var_coord",
    "relative to ||g||^2 (probe)": "probe_var_rel",
}


def variance_ranking(frame: pd.DataFrame, root: str | Path = ".", label: str = "col_norm") -> pd.DataFrame:
    """Claim 1 per definition of "a layer's variance" (``DEFINITIONS``), on ``label``'s runs
    after warmup: the share of recorded steps at which output is first and embedding second
    (role means per run and step, then over runs), the time-averaged order, and whether the
    share reaches ``MOST_PROBES``. One row per definition recorded."""
    part = frame[(frame["label"] == label) & frame["param"].notna()]
    rows = []
    for name, stat in DEFINITIONS.items():
        late = after_warmup(part[part["stat"] == stat], Path(root))
        if late.empty:
            continue
        share, order = _rank_share(late.groupby(["run", "step", "role"], as_index=False)["value"].mean())
        rows.append(
            {
                "definition": name,
                "stat": stat,
                "share": share,
                "order": order,
                "holds": math.isfinite(share) and share >= MOST_PROBES,
            }
        )
    return pd.DataFrame(rows, columns=["definition", "stat", "share", "order", "holds"]).set_index(
        "definition"
    )


def variance_claim(frame: pd.DataFrame, root: str | Path = ".", label: str = "col_norm") -> Claim:
    """Claim 1 on a metrics frame (``load_runs(root)``)."""
    title = "The output layer has the highest gradient variance, the embedding second"
    rule = (
        f"on the `{label}` runs after warmup, output first and embedding second at >= "
        f"{100 * MOST_PROBES:.0f}% of the probe steps, per definition; held by the total"
    )
    paper = "Figure 4: output highest throughout training, embedding second (no number given)"
    ranking = variance_ranking(frame, root, label)
    if "total (probe)" not in ranking.index or not math.isfinite(ranking.loc["total (probe)", "share"]):
        return Claim(
            title,
            rule,
            None,
            f"no probe rows after warmup on `{label}`: record with "
            "the probe on (`probe_at` in the instrumentation schedule)",
            paper,
        )
    holding = list(ranking.index[ranking["holds"]])
    part = frame[(frame["label"] == label) & frame["param"].notna()]
    ratio = after_warmup(part[part["stat"] == "probe_var"], Path(root))
    ratio = ratio.groupby(["step", "role"])["value"].mean().unstack()
    over_time = (ratio["output"] / ratio["embedding"]).dropna()
    shown = (
        ", ".join(
            f"step {int(s)}: {v:.2f}"
            for s, v in over_time.iloc[sorted({0, len(over_time) // 2, len(over_time) - 1})].items()
        )
        if len(over_time)
        else "n/a"
    )
    evidence = "; ".join(
        f"{n}: {' > '.join(row['order'])} on average, output > embedding first at "
        f"{100 * row['share']:.0f}% of probe steps"
        for n, row in ranking.iterrows()
    )
    evidence += (
        f"; holds by {', '.join(holding) if holding else 'no definition'}; output/embedding "
        f"(probe total) over time: {shown}"
    )
    return Claim(title, rule, "total (probe)" in holding, evidence, paper)


def _matched(rows: pd.DataFrame, loss: pd.Series, levels: np.ndarray) -> np.ndarray:
    """A run's statistic read at training-loss ``levels``: the statistic against the running
    training loss at its steps, interpolated (loss falls, so the arrays are flipped)."""
    at = loss.reindex(rows.index, method="nearest")
    order = np.argsort(at.to_numpy())
    return np.interp(levels, at.to_numpy()[order], rows.to_numpy()[order])


def embedding_variance_claim(frame: pd.DataFrame, root: str | Path = ".") -> Claim:
    """Claim 2 (the paper's Figure 4b) on a metrics frame, at matched training loss."""
    title = "Output-layer momentum lowers the embedding's gradient variance (Figure 4b)"
    rule = (
        f"log(embedding variance of `scale` / of `col_norm`) read at {MATCHED_LEVELS} matched "
        "training-loss values after warmup, paired by seed: interval below 0 (total); the "
        "relative variance shown beside"
    )
    paper = "Figure 4b: the embedding's variance drops once the last layer has momentum (qualitative)"
    root = Path(root)
    both = after_warmup(frame[frame["label"].isin(["scale", "col_norm"])], root)
    logs: dict[str, list[float]] = {"grad_var": [], "grad_var_rel": []}
    for _seed, part in both.groupby("seed"):
        # one run per arm and seed (a root without a selection may hold several: take the first)
        runs = {lab: grp[grp["run"] == sorted(grp["run"].unique())[0]] for lab, grp in part.groupby("label")}
        if set(runs) != {"scale", "col_norm"}:
            continue
        losses = {
            lab: grp[(grp["stat"] == "loss") & grp["param"].isna()]
            .set_index("step")["value"]
            .rolling(10, min_periods=1)
            .mean()
            for lab, grp in runs.items()
        }
        lo = max(v.min() for v in losses.values())
        hi = min(v.max() for v in losses.values())
        if not lo < hi:
            continue
        levels = np.linspace(lo, hi, MATCHED_LEVELS + 2)[1:-1]
        for stat in logs:
            values = {}
            for lab, grp in runs.items():
                rows = grp[(grp["stat"] == stat) & (grp["role"] == "embedding")]
                rows = rows.groupby("step")["value"].sum()
                if len(rows) >= 2:
                    values[lab] = _matched(rows, losses[lab], levels)
            if len(values) == 2:
                logs[stat].append(float(np.mean(np.log(values["scale"] / values["col_norm"]))))
    if not logs["grad_var"]:
        return Claim(
            title,
            rule,
            None,
            "needs instrumented `scale` and `col_norm` runs of the same "
            "seeds whose training losses overlap after warmup",
            paper,
        )
    mean, half = interval(logs["grad_var"])
    rel, rel_half = interval(logs["grad_var_rel"])
    decided = math.isfinite(half)
    return three_way(
        title,
        rule,
        decided and mean + half < 0,
        decided and mean - half >= 0,
        f"total: log ratio {fmt(mean, half)} (variance x "
        f"{math.exp(mean):.2f}); relative to ||g||^2: {fmt(rel, rel_half)}; over "
        f"{len(logs['grad_var'])} seeds",
        paper,
    )
