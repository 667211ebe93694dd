"""Normalization as steepest descent under a norm: the ladder's direction maps, with their norms.

For a gradient ``G`` (torch layout ``[out, in]``, so row ``i`` holds output unit ``i``'s fan-in
weights) and a norm ``||.||``, the steepest-descent direction is
``U* = argmax <G, U> s.t. ||U|| <= 1`` and the value reached is the dual norm ``||G||_*``;
``NORM_TABLE`` lists, per map, its norm, its direction, the dual norm and where the ladder
applies it (notebook 02 shows it).

The optimizers rescale these maps to unit RMS per unit (``analysis.optim.transforms``), which only
changes the step's length, not its direction. ``steepest`` returns each map's direction scaled
onto its own unit ball, so ``<G, steepest(kind, G)>`` can be compared with ``dual_norm``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from analysis.optim.maths import newton_schulz as ns
from analysis.optim.maths import rms_normalize

NORM_TABLE = [
    {
        "map": "sign",
        "norm ||U||": "max entry |U_ij|",
        "direction U*": "sign(G)",
        "dual norm ||G||_*": "sum_ij |G_ij|",
        "layers (ladder)": "every matrix",
    },
    {
        "map": "col_norm",
        "norm ||U||": "max over output units i of ||U_i||_2",
        "direction U*": "G_i / ||G_i||, per output unit",
        "dual norm ||G||_*": "sum_i ||G_i||_2",
        "layers (ladder)": "every matrix, over its fan-in: a Linear's rows, the embedding's dim 0",
    },
    {
        "map": "row_norm",
        "norm ||U||": "max over input features j of ||U_:j||_2",
        "direction U*": "G_:j / ||G_:j||, per input feature",
        "dual norm ||G||_*": "sum_j ||G_:j||_2",
        "layers (ladder)": "every matrix, over its fan-out",
    },
    {
        "map": "spectral_norm",
        "norm ||U||": "largest singular value",
        "direction U*": "U V^T (the polar factor)",
        "dual norm ||G||_*": "sum_k sigma_k (nuclear)",
        "layers (ladder)": "every matrix (Newton-Schulz)",
    },
]

KINDS = ("sign", "col_norm", "row_norm", "spectral")


def norm(kind: str, u: Tensor) -> Tensor:
    """The primal norm of ``u`` (``[out, in]``) for a direction map."""
    u = u.double()
    if kind == "sign":
        return u.abs().max()
    if kind == "col_norm":
        return u.norm(dim=1).max()
    if kind == "row_norm":
        return u.norm(dim=0).max()
    if kind == "spectral":
        return torch.linalg.matrix_norm(u, ord=2)
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(KINDS)}")


def dual_norm(kind: str, g: Tensor) -> Tensor:
    """``max <g, u>`` over the unit ball of ``norm(kind)``: the value steepest descent reaches."""
    g = g.double()
    if kind == "sign":
        return g.abs().sum()
    if kind == "col_norm":
        return g.norm(dim=1).sum()
    if kind == "row_norm":
        return g.norm(dim=0).sum()
    if kind == "spectral":
        return torch.linalg.svdvals(g).sum()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(KINDS)}")


def steepest(kind: str, g: Tensor, newton_schulz: bool = False) -> Tensor:
    """The map's direction, scaled to norm 1 under ``norm(kind)``.

    ``spectral`` is the exact polar factor from an SVD, or with ``newton_schulz=True`` the
    5-step quintic iteration the optimizers use (it only approximates ``U V^T``: its singular
    values land in about [0.7, 1.2], so it reaches slightly less than the dual norm).
    """

    g = g.double()
    if kind == "sign":
        u = torch.sign(g)
    elif kind == "col_norm":
        u = rms_normalize(g, dim=1)
    elif kind == "row_norm":
        u = rms_normalize(g, dim=0)
    elif kind == "spectral":
        if newton_schulz:
            u = ns(g.float()).double()
        else:
            left, _, right = torch.linalg.svd(g, full_matrices=False)
            u = left @ right
    else:
        raise ValueError(f"unknown map {kind!r}; choose one of {', '.join(KINDS)}")
    return u / norm(kind, u)


def efficiency_table(g: Tensor) -> dict[str, dict[str, float]]:
    """``<G, U_a> / ||G||_{*,b}`` for every map a (rescaled onto b's ball) and norm b.

    The diagonal is 1 (each map is steepest under its own norm); off-diagonal entries are
    below 1: another map's direction, rescaled to the same norm ball, descends less.
    """
    table = {}
    for b in KINDS:
        dual = dual_norm(b, g)
        row = {}
        for a in KINDS:
            u = steepest(a, g)
            u = u / norm(b, u)
            row[a] = float((g.double() * u).sum() / dual)
        table[b] = row
    return table
