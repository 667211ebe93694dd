"""The comparison's arms (a display label, a recipe, a momentum placement), the hyperparameters
every arm shares, and the points a tuning chose for each (``tuning.json``).

An arm is a rung of the normalization ladder with its momentum placement (arXiv 2506.16659,
Section 3's bottom-up argument: sgd, sign, row_norm, col_norm, spectral_norm, then col_norm with
momentum on the output layer, the embedding, or every matrix) or a baseline (AdamW, Muon).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.optim.hyper import OptimizerConfig
from analysis.recording import TUNING, read_json
from analysis.results.run_set import REFERENCE
from analysis.training.config import ConfigError


@dataclass(frozen=True)
class Arm:
    """One rung of the ladder or a baseline: a display label, a recipe, a momentum placement."""

    label: str
    optimizer: str
    momentum: str | None = None


ARMS = (
    Arm("sgd", "sgd"),
    Arm("sign", "sign"),
    Arm("row_norm", "row_norm"),
    Arm("col_norm", "col_norm"),
    Arm("spectral_norm", "spectral_norm"),
    Arm("scale", "scale"),
    Arm("col_norm+embedding", "col_norm", "embedding"),
    Arm("col_norm+all", "col_norm", "all"),
    Arm("adamw", "adamw"),
    Arm("muon", "muon"),
)


ARM_BY_LABEL = {a.label: a for a in ARMS}


# The hyperparameters every arm shares (only ``lr`` is swept, and beta2 where a preset tunes
# it): the vectors' Adam lr is the paper's <=350M scripts' 2e-2, every arm.
SHARED_HYPER = OptimizerConfig(adam_lr=2e-2)


def tuned_points(path: str | Path = REFERENCE / TUNING) -> dict[str, tuple[float, float | None]]:
    """The chosen ``(lr, beta2)`` per arm of a tuning (``tuning.json``; beta2 None where the
    tuning did not choose one), or {} when there is none."""
    table = read_json(path) or {"arms": {}}
    return {
        label: (row["best"], row.get("beta2"))
        for label, row in table["arms"].items()
        if row.get("best") is not None
    }


def tuned_mults(path: str | Path = REFERENCE / TUNING) -> dict[str, float]:
    """The chosen embedding/output multiplier per arm of a tuning (``tuning.json``; 1.0 where the
    tuning did not tune it, as protocol version 2 did not), or {} when there is none."""
    table = read_json(path) or {"arms": {}}
    return {
        label: row.get("mult") or 1.0 for label, row in table["arms"].items() if row.get("best") is not None
    }


def tuned_lrs(path: str | Path = REFERENCE / TUNING) -> dict[str, float]:
    """The best lr per arm of a tuning (``tuning.json``), or {} when there is none."""
    return {label: lr for label, (lr, _) in tuned_points(path).items()}


def select_arms(labels: list[str] | None, preset=None) -> tuple[Arm, ...]:
    """The arms named by ``labels`` (when empty: the ``arms`` of ``preset``, a ``Preset``, or
    all); ``ConfigError`` for an unknown one."""
    if not labels:
        return ARMS if preset is None or preset.arms is None else select_arms(list(preset.arms))
    unknown = [label for label in labels if label not in ARM_BY_LABEL]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; choose from {', '.join(ARM_BY_LABEL)}")
    return tuple(ARM_BY_LABEL[label] for label in labels)
