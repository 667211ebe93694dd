"""The bottom-up ladder of the SCALE paper (arXiv 2506.16659, its normalization ablation): per
matrix, optional momentum ``m <- beta m + (1 - beta) g`` where the placement puts it, then one
direction map (none, sign, row-wise or column-wise RMS normalization, Newton-Schulz), and Adam on
the vectors. ``col_norm`` with momentum on the output layer is SCALE
(``analysis.optim.recipes.scale_transforms`` builds it here; ``analysis/optim/scale.py`` writes
it out in one file).
"""

from __future__ import annotations

from functools import partial

from analysis.optim.hyper import MATRIX_ROLES, MOMENTUM_SUFFIX, PLACEMENTS, OptimizerConfig, RecipeError
from analysis.optim.roles import fan_out
from analysis.optim.transforms import (
    PerLayout,
    Transform,
    chain,
    momentum,
    normalize,
    orthogonalize,
    scale_by_adam,
    sign,
    tap,
)


def direction_map(kind: str, fan_in: tuple[int, ...], cfg: OptimizerConfig) -> Transform:
    """The direction of a ladder recipe for a matrix with fan-in axes ``fan_in``
    (``analysis.optim.roles``): ``col_norm`` normalizes over them (one scale per output unit),
    ``row_norm`` over the output axes (``roles.fan_out``)."""
    if kind == "sgd":
        return Transform()
    if kind == "sign":
        return sign()
    if kind == "col_norm":
        return normalize(fan_in)
    if kind == "row_norm":
        return normalize(fan_out(fan_in))
    if kind == "spectral_norm":
        return orthogonalize(cfg.ns_steps)
    raise RecipeError(f"unknown direction {kind!r}")


def ladder_transforms(kind: str, placement: str, cfg: OptimizerConfig) -> dict[str, Transform]:
    """Per role: momentum (where ``placement`` puts it), then ``kind``'s map; Adam on vectors.
    The matrices ``cfg.momentum_on`` names (their groups' label ``"<role>+momentum"``,
    ``hyper.role_groups``) get momentum whatever the placement."""
    with_momentum = PLACEMENTS[placement]
    transforms = {}
    for role in MATRIX_ROLES:
        transforms[role] = PerLayout(partial(_ladder_step, kind, role in with_momentum, cfg))
        transforms[role + MOMENTUM_SUFFIX] = PerLayout(partial(_ladder_step, kind, True, cfg))
    eps_on = "raw" if cfg.vector_rule == "published" else "corrected"
    transforms["vector"] = chain(scale_by_adam(cfg.betas, cfg.eps, eps_on), tap("update"))
    return transforms


def _ladder_step(kind: str, with_momentum: bool, cfg: OptimizerConfig, fan_in: tuple[int, ...]) -> Transform:
    """One matrix layout's chain: momentum (if placed here), the direction, the taps."""
    parts = [momentum(cfg.beta), tap("momentum")] if with_momentum else []
    return chain(*parts, direction_map(kind, fan_in, cfg), tap("update"))
