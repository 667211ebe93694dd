"""The paper's theory as a prediction the runs check: where momentum helps most.

The SCALE paper (arXiv 2506.16659, its Theorem 2.1) bounds layer-wise SGD with momentum by
terms in which each layer's gradient variance ``sigma_l^2`` carries a weight such as
``(1 - beta_l) / (1 + beta_l)``: the variance of an exponential moving average with
coefficient ``beta`` of independent noise of variance ``s^2`` is ``s^2 (1-beta)/(1+beta)``
(the sum of ``(1-beta)^2 beta^(2k)``), so momentum on layer ``l`` removes the share
``1 - (1-beta)/(1+beta)`` (0.947 at beta 0.9) of its ``sigma_l^2`` from the bound, and is worth
its memory where ``sigma_l^2`` is large. The prediction takes ``sigma_l^2`` as the probe's
total variance per matrix (``probe_var``: small batches against a large one, as the paper
measures it), on the ``col_norm`` runs (no momentum anywhere) after warmup, averaged over time
and seeds:

    predicted gain(P) = (1 - (1-beta)/(1+beta)) * sum over matrices m in P of sigma_m^2

for the placements P = output (SCALE), embedding, all (every matrix). The runs give each
placement's measured gain, ``loss(col_norm) - loss(placement)`` paired by seed. Every pair of
placements is then compared two-sided: the predicted order agrees or disagrees with the
measured one, or the measured difference's interval holds 0 ("tied", no evidence either way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.results.stats import fmt, paired, separated
from analysis.results.variance_claims import after_warmup

MOMENTUM_ARMS = {"output": "scale", "embedding": "col_norm+embedding", "all": "col_norm+all"}
ROLES_OF = {"output": ("output",), "embedding": ("embedding",), "all": ("output", "embedding", "hidden")}


def kept_fraction(beta: float) -> float:
    """The share of independent noise's variance an EMA with coefficient ``beta`` keeps."""
    return (1 - beta) / (1 + beta)


@dataclass
class TheoryCheck:
    """Predicted and measured gains per placement and the pairwise verdicts."""

    predicted: dict[str, float]
    measured: dict[str, tuple[float, float, int]]
    pairs: list[tuple[str, str, str]]  # (a, b, "agree" | "disagree" | "tied" | "n/a")
    sigma2: dict[str, float]

    @property
    def held(self) -> bool | None:
        verdicts = [v for _, _, v in self.pairs if v in ("agree", "disagree")]
        return None if not verdicts else "disagree" not in verdicts

    def table(self) -> pd.DataFrame:
        """Per placement: its arm, the predicted gain, the measured gain with its half-width and
        the seeds paired (rows, for a notebook or a caller to format)."""
        return pd.DataFrame(
            [
                {
                    "placement": p,
                    "arm": MOMENTUM_ARMS[p],
                    "predicted": self.predicted[p],
                    "measured": m,
                    "measured_ci": h,
                    "seeds": n,
                }
                for p, (m, h, n) in self.measured.items()
            ]
        ).set_index("placement")

    def lines(self) -> list[str]:
        order = sorted(self.predicted, key=self.predicted.get, reverse=True)
        out = [
            "gradient variance per role on col_norm (probe total, summed over its matrices, "
            "after warmup): " + ", ".join(f"{r} {v:.3g}" for r, v in self.sigma2.items()),
            "predicted gain order: "
            + " > ".join(order)
            + " ("
            + ", ".join(f"{p} {self.predicted[p]:.3g}" for p in order)
            + ")",
            "measured gain (loss(col_norm) - loss(placement), nats): "
            + ", ".join(f"{p} {fmt(m, h)}" for p, (m, h, _) in self.measured.items()),
        ]
        out += ["pairs: " + "; ".join(f"{a} vs {b}: {v}" for a, b, v in self.pairs)]
        return out


def role_sigma2(frame: pd.DataFrame, root, label: str = "col_norm") -> dict[str, float]:
    """Per role, the probe's total variance summed over its matrices on ``label``'s runs (under
    ``root``), after each run's warmup, averaged over probe steps and seeds."""
    part = frame[(frame["label"] == label) & (frame["stat"] == "probe_var") & frame["param"].notna()]
    late = after_warmup(part, root)
    per_run = [
        rows.groupby(["step", "role"])["value"].sum().groupby("role").mean()
        for _, rows in late.groupby("run")
    ]
    if not per_run:
        return {}
    return pd.concat(per_run, axis=1).mean(axis=1).to_dict()


def check(frame: pd.DataFrame, results: pd.DataFrame, root, beta: float = 0.9) -> TheoryCheck | None:
    """The prediction from ``frame``'s (``load_runs(root)``) col_norm probes against
    ``results``' placements; None without the probes or the runs."""
    sigma2 = role_sigma2(frame, root)
    if not sigma2:
        return None
    removed = 1 - kept_fraction(beta)
    predicted = {p: removed * sum(sigma2.get(r, 0.0) for r in ROLES_OF[p]) for p in MOMENTUM_ARMS}
    return judge(predicted, results, sigma2)


def pair_verdict(diff: float, half: float, n: int, predicted_first_gains_more: bool | None) -> str:
    """One pair's verdict: ``diff`` +- ``half`` (over ``n`` seeds) is the measured advantage of
    the first placement (> 0: it ends lower); "tied" when the interval holds 0, "n/a" without
    seeds or when the prediction ranks the two equal (None)."""
    if n == 0 or not math.isfinite(diff) or predicted_first_gains_more is None:
        return "n/a"
    if not separated(diff, half):
        return "tied"
    return "agree" if (diff > 0) == predicted_first_gains_more else "disagree"


def judge(predicted: dict[str, float], results: pd.DataFrame, sigma2: dict[str, float]) -> TheoryCheck:
    """Predicted gains per placement (``MOMENTUM_ARMS``' keys) against ``results``' measured
    gains over col_norm, every pair two-sided (``pair_verdict``); ``sigma2`` is what the
    prediction was made from, per role (for the lines)."""
    measured = {p: paired(results, "col_norm", arm) for p, arm in MOMENTUM_ARMS.items()}
    pairs = []
    names = list(MOMENTUM_ARMS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            diff, half, n = paired(results, MOMENTUM_ARMS[b], MOMENTUM_ARMS[a])  # > 0: a gains more
            more = None if predicted[a] == predicted[b] else predicted[a] > predicted[b]
            pairs.append((a, b, pair_verdict(diff, half, n, more)))
    return TheoryCheck(predicted, measured, pairs, sigma2)
