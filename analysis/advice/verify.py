"""The advice checked: short paired runs of the advised placement against col_norm, SCALE and
col_norm+all, on the same seeds at one shared lr, and the prediction's verdict per pair in the
terms of the paper's claim 9 (``analysis.results.theory``): the predicted order of two
placements' gains *agrees* or *disagrees* with the measured paired loss difference, or the
measured difference's 95% interval holds 0 (*tied*: no evidence either way).

Runs are the trainer's own (resumable: a finished run is reused, an interrupted one resumes),
under ``out/<arm>/seed<k>``, in parallel worker processes (``analysis.protocol.runner``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from analysis.protocol.arms import Arm
from analysis.protocol.presets import PRESETS
from analysis.protocol.runner import Runner
from analysis.recording import CONFIG, read_json
from analysis.results.stats import final_results, fmt, paired
from analysis.results.theory import pair_verdict
from analysis.training.config import TrainConfig

# the reference's held-out seeds: the shared lr is col_norm's tuned one, chosen on seeds 0-1,
# so those seeds would favour col_norm in a check of the advice against it
SEEDS = PRESETS["reference"].held_out_seeds[:3]

ARMS = {
    "col_norm": Arm("col_norm", "col_norm"),
    "scale": Arm("scale", "scale"),
    "col_norm+all": Arm("col_norm+all", "col_norm", "all"),
    "advised": Arm("advised", "col_norm"),
}


def verification_runs(
    momentum_on: list[str], model: str, steps: int, lr: float, seeds=SEEDS, out: str | Path = "runs/advice"
) -> list[tuple[TrainConfig, Path]]:
    """``(config, run_dir)`` of every verification run: each arm on each seed, the reference
    preset's batch shape on ``model``, ``steps`` long, at ``lr``, the final evaluation only."""
    shape = replace(PRESETS["reference"], model=model, steps=steps, instrument=None, eval_every=steps)
    runs = []
    for label, arm in ARMS.items():
        for seed in seeds:
            config = shape.config(arm, seed, lr)
            if label == "advised":
                config = replace(config, hyper=replace(config.hyper, momentum_on=tuple(momentum_on)))
            runs.append((config, Path(out) / label / f"seed{seed}"))
    return runs


@dataclass
class Verdicts:
    """The advised placement against each other arm: predicted and measured, and the verdict."""

    rows: list[dict]
    runs: pd.DataFrame | None = None  # per arm and seed: the final loss and the commit that trained it

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def save(self, out: str | Path, lr: float, steps: int) -> dict[str, Path]:
        """Write ``verdicts.csv`` (per pair: predicted, measured +- half-width, seeds, verdict,
        the shared lr and steps) and ``verify_runs.csv`` (per run: arm, seed, final loss, git
        commit), small enough to ship beside the advice."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"verdicts.csv": out / "verdicts.csv", "verify_runs.csv": out / "verify_runs.csv"}
        self.frame().assign(lr=lr, steps=steps).to_csv(paths["verdicts.csv"], index=False)
        if self.runs is not None:
            self.runs.to_csv(paths["verify_runs.csv"], index=False)
        else:
            del paths["verify_runs.csv"]
        return paths

    def lines(self) -> list[str]:
        return [
            f"advised vs {r['against']}: predicted gain {r['predicted']:+.3g} (advised minus {r['against']}), "
            f"measured loss difference {fmt(r['measured'], r['half'])} nats over {r['seeds']} seeds: {r['verdict']}"
            for r in self.rows
        ]


def _runs(results: pd.DataFrame) -> pd.DataFrame:
    """Per run: arm, seed, steps, lr, final loss and the commit that trained it (config.json)."""
    commits = [(read_json(Path(run) / CONFIG) or {}).get("git_sha") for run in results["run"]]
    keep = ["label", "seed", "steps", "lr", "final_eval_loss"]
    return results[keep].assign(git_sha=commits).sort_values(["label", "seed"], ignore_index=True)


def verdicts(results: pd.DataFrame, predicted: dict[str, float]) -> Verdicts:
    """Per arm other than ``advised``: the predicted gain difference (advised minus arm, >0:
    advised should end lower), the measured paired ``loss(advised) - loss(arm)`` and the
    verdict (agree, disagree, tied, or n/a when the prediction ranks them equal or no seed pairs)."""
    rows = []
    for other in [a for a in ARMS if a != "advised"]:
        gap = predicted["advised"] - predicted[other]
        mean, half, n = paired(results, "advised", other)
        verdict = pair_verdict(-mean, half, n if n >= 2 else 0, None if gap == 0 else gap > 0)
        rows.append(
            {
                "against": other,
                "predicted": gap,
                "measured": mean,
                "half": half,
                "seeds": n,
                "verdict": verdict,
            }
        )
    return Verdicts(rows)


def verify(advice, model: str, steps: int, lr: float, seeds=SEEDS, out="runs/advice", jobs: int = 1,
           progress: bool = True) -> Verdicts:  # fmt: skip
    """Train the verification runs (``verification_runs``) and judge ``advice``'s prediction."""
    runs = verification_runs(advice.momentum_on, model, steps, lr, seeds, out)
    Runner(jobs=jobs, progress=progress).run(runs)
    predicted = {name: gain for name, (_, gain) in advice.marks.items() if name in ARMS}
    predicted["advised"] = advice.predicted_gain
    results = final_results(out)
    return replace(verdicts(results, predicted), runs=_runs(results))
