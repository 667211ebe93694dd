"""The advisor's track record on the shipped reference: its predictions for the placements the
reference measured (SCALE's output layer, the embedding, every matrix) against the measured
gains over col_norm, judged pair by pair exactly as the paper's claim 9 is
(``analysis.results.theory.judge``: agree, disagree, or tied when the runs cannot tell).

The advisor predicts from its own probe of the model (``analysis.advice.probe``), not from the
reference's recorded probes, so this checks the tool a researcher runs, end to end.
"""

from __future__ import annotations

from pathlib import Path

from analysis.results.run_set import REFERENCE
from analysis.results.stats import final_results
from analysis.results.theory import MOMENTUM_ARMS, ROLES_OF, TheoryCheck, judge


def track_record(advice, root: str | Path = REFERENCE) -> TheoryCheck:
    """``advice`` (for the reference's model) against the runs under ``root``."""
    matrices = advice.matrices
    sigma2 = matrices.groupby("role", sort=False)["sigma2"].sum().to_dict()
    predicted = {p: float(matrices[matrices["role"].isin(ROLES_OF[p])]["gain"].sum()) for p in MOMENTUM_ARMS}
    return judge(predicted, final_results(root), sigma2)
