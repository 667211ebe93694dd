"""Hyperparameters shared by every recipe, and their learning-rate structure.

The learning-rate structure is the same for every recipe, so a comparison gives each the same
tuning freedom: ``lr`` for the matrices, times ``embedding_lr_mult`` on the embedding and
``output_lr_mult`` on the output layer, and ``adam_lr`` for the vectors (None: equal to ``lr``
for the baselines, 2e-2 for the ladder as the paper's small-model scripts). Muon's hidden
matrices use Moonshot's RMS matching, so its ``lr`` is on the AdamW scale.

``OptimizerConfig.validate`` and ``Recipe.resolve`` (in ``recipes``) are the one place
hyperparameters are checked and their defaults filled in.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from dataclasses import dataclass

from analysis.optim.roles import ROLES, Layout

PLACEMENTS = {
    "none": (),
    "output": ("output",),
    "last": ("output",),
    "embedding": ("embedding",),
    "first": ("embedding",),
    "all": ("embedding", "hidden", "output"),
}
MATRIX_ROLES = ("embedding", "hidden", "output")
VECTOR_RULES = ("published", "torch")


class RecipeError(ValueError):
    """Bad recipe name or hyperparameter; the message names the problem and the fix."""


@dataclass(frozen=True)
class OptimizerConfig:
    """Hyperparameters shared by every recipe (each uses the ones it needs).

    ``lr``, ``adam_lr`` and ``momentum`` left at None take the recipe's defaults
    (``Recipe.resolve``); this class and ``validate`` are the one place hyperparameters are
    checked and filled in (the trainer's config delegates here).
    """

    lr: float | None = None  # peak lr of the matrices; None -> the recipe's default
    adam_lr: float | None = None  # vectors' peak lr; None -> the recipe's default
    embedding_lr_mult: float = 1.0  # the embedding's lr is lr x this
    output_lr_mult: float = 1.0  # the output layer's lr is lr x this
    vector_rule: str | None = None  # published | torch; None -> the recipe's default
    beta: float = 0.9  # momentum
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: str | None = None  # placement for ladder recipes; None -> recipe default
    momentum_on: tuple[str, ...] = ()  # and on the matrices these names match (fnmatch globs)
    rank: int | None = None  # low-rank baselines; None -> hidden_size // 4
    update_proj_gap: int = 200
    ns_steps: int = 5
    spam_gammas: tuple[float, float, float] = (0.7, 0.9, 0.999)  # Stable-SPAM gamma1..3
    reset_every: int = 1000  # Stable-SPAM momentum reset

    def validate(self) -> OptimizerConfig:
        """Raise ``RecipeError`` naming the first bad value and the fix; else return self."""
        finite = (
            self.lr,
            self.adam_lr,
            self.embedding_lr_mult,
            self.output_lr_mult,
            self.weight_decay,
            self.eps,
        )
        checks = [
            (
                all(v is None or math.isfinite(v) for v in finite),
                f"learning rates, multipliers, weight_decay and eps must be finite numbers, got "
                f"lr {self.lr}, adam_lr {self.adam_lr}, multipliers {self.embedding_lr_mult} / "
                f"{self.output_lr_mult}, weight_decay {self.weight_decay}, eps {self.eps}",
            ),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}; pass e.g. --lr 1e-3"),
            (
                self.adam_lr is None or self.adam_lr > 0,
                f"adam_lr must be > 0, got {self.adam_lr}; pass e.g. --adam_lr 2e-2",
            ),
            (
                self.embedding_lr_mult > 0 and self.output_lr_mult > 0,
                "embedding_lr_mult and output_lr_mult must be > 0 (1: the matrices' lr)",
            ),
            (
                self.vector_rule is None or self.vector_rule in VECTOR_RULES,
                f"unknown vector_rule {self.vector_rule!r}; choose one of {', '.join(VECTOR_RULES)}",
            ),
            (0.0 <= self.beta < 1.0, f"momentum beta must be in [0, 1), got {self.beta}"),
            (all(0.0 <= b < 1.0 for b in self.betas), f"betas must be in [0, 1), got {self.betas}"),
            (self.eps >= 0, f"eps must be >= 0, got {self.eps}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (
                self.momentum is None or self.momentum in PLACEMENTS,
                f"unknown momentum placement {self.momentum!r}; choose one of {', '.join(PLACEMENTS)}",
            ),
            (
                all(isinstance(p, str) and p for p in self.momentum_on),
                f"momentum_on takes parameter names or globs (e.g. 'lm_head.weight'), got {self.momentum_on!r}",
            ),
            (self.rank is None or self.rank >= 1, f"rank must be >= 1, got {self.rank}"),
            (self.ns_steps >= 1, f"ns_steps must be >= 1, got {self.ns_steps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecipeError(message)
        return self


def role_lrs(cfg: OptimizerConfig) -> dict[str, float]:
    """Peak lr per role, the same structure for every recipe: ``lr`` on the matrices (times
    the embedding and output multipliers) and ``adam_lr`` on the vectors."""
    return {
        "embedding": cfg.lr * cfg.embedding_lr_mult,
        "hidden": cfg.lr,
        "output": cfg.lr * cfg.output_lr_mult,
        "vector": cfg.adam_lr,
    }


MOMENTUM_SUFFIX = "+momentum"  # the label of a role's matrices that ``momentum_on`` names


def momentum_matrices(layout: Layout, patterns: tuple[str, ...]) -> set[str]:
    """The matrices (by parameter name) that the globs ``patterns`` name (``fnmatch``, against
    ``Layout`` names: ``"lm_head.weight"``, ``"model.layers.3.*"``); ``RecipeError`` for a
    pattern that names no matrix, with the nearest names, since a typo would silently train
    without the momentum asked for."""
    matrices = [p.name for p in layout.params.values() if p.role in MATRIX_ROLES]
    found = set()
    for pattern in patterns:
        hits = fnmatch.filter(matrices, pattern)
        if not hits:
            near = difflib.get_close_matches(pattern, matrices, n=3, cutoff=0.4)
            raise RecipeError(
                f"momentum_on {pattern!r} names no matrix of the model"
                + (f" (nearest: {', '.join(near)})" if near else "")
                + "; give parameter names or globs as model.named_parameters() spells them"
            )
        found |= set(hits)
    return found


def role_groups(layout: Layout, cfg: OptimizerConfig, roles=ROLES) -> list[dict]:
    """Parameter groups of the roles in ``roles``, labelled by role, at ``role_lrs(cfg)``: one
    per (role, fan-in axes) present in ``layout`` (``analysis.optim.roles.assign``), so a
    per-layout transform knows its axes (``"fan_in"``). The matrices ``cfg.momentum_on`` names
    form groups of their own, labelled ``"<role>+momentum"`` (the same lr; a ladder recipe puts
    momentum on them). Vectors get weight decay only under the published vector rule. Each
    group keeps its parameter names (``names``) for tables and checkpoints."""
    lrs = role_lrs(cfg)
    vector_decay = cfg.weight_decay if cfg.vector_rule == "published" else 0.0
    by_role = layout.by_role()
    placed = momentum_matrices(layout, cfg.momentum_on) if cfg.momentum_on else set()
    groups = []
    for role in roles:
        layouts: dict = {}
        for p in by_role.get(role, []):
            label = role + MOMENTUM_SUFFIX if p.name in placed else role
            layouts.setdefault((label, p.fan_in), []).append(p)
        for (label, fan_in), params in layouts.items():
            group = {
                "params": [p.param for p in params],
                "names": [p.name for p in params],
                "label": label,
                "lr": lrs[role],
                "weight_decay": vector_decay if role == "vector" else cfg.weight_decay,
            }
            if fan_in is not None:
                group["fan_in"] = fan_in
            groups.append(group)
    return groups
