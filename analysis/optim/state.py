"""Optimizer state declared per role: how many elements a recipe keeps for a tensor.

Every recipe (``analysis.optim.recipes``) declares a ``StateRule`` per role (``embedding``,
``hidden``, ``output``, ``vector``): the number of state elements it keeps for a tensor of a
given shape, as a function of ``(shape, rank)``. That one declaration feeds the memory table
(``analysis.results.memory``), ``--optimizer list`` and the report, and a test checks it
against the elements actually held in ``optimizer.state`` for every recipe. Step counters and
other size-1 scalars are not counted, as the papers do not count them.

For a matrix ``m x n`` (torch layout ``(out, in)``) and rank ``r``:

=====================  ===========================================================================
``NO_STATE``           0 (stateless: sign, normalization, SWAN's hidden matrices)
``per_element(k)``     ``k m n`` (momentum: 1; Adam: 2)
``FACTORED``           ``m + n`` (Adafactor's row and column second moments; ``n`` for a vector)
``SUBSPACE``           ``2 r max(m, n) + r min(m, n)``: two moments in the rank-r subspace plus the
                       stored ``r x min(m, n)`` projector (GaLore, Fira; and APOLLO as
                       pytorch-optimizer implements it, which stores its random projection)
``SUBSPACE_SEEDED``    ``2 r max(m, n)``: the projection regenerated from a seed, not stored
                       (APOLLO as its paper counts it)
``RANK1``              ``2 max(m, n) + min(m, n)``: ``SUBSPACE`` at rank 1 whatever ``r`` (APOLLO-Mini)
``MOMENTUM_AND_ROWS``  ``m n + m``: momentum and one second moment per output unit (NorMuon)
=====================  ===========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass


def numel(shape) -> int:
    """Elements of a tensor of ``shape`` (``math.prod``)."""
    return math.prod(shape)


@dataclass(frozen=True)
class StateRule:
    """Elements of state for one tensor: ``rule(shape, rank) -> int``; ``text`` says it in words."""

    text: str
    elements: Callable[[tuple[int, ...], int], int]

    def __call__(self, shape, rank: int) -> int:
        return int(self.elements(tuple(shape), rank))


def per_element(k: int) -> StateRule:
    """``k`` elements per parameter element (``per_element(2)``: Adam's two moments).

    >>> per_element(2)((3, 4), rank=1)
    24
    """
    return StateRule(f"{k} x", lambda shape, rank: k * numel(shape))


NO_STATE = per_element(0)
FACTORED = StateRule(
    "rows + columns (n for a vector)", lambda s, r: s[0] + numel(s[1:]) if len(s) >= 2 else numel(s)
)
SUBSPACE = StateRule("2 r max(m, n) + r min(m, n)", lambda s, r: 2 * r * max(s) + r * min(s))
SUBSPACE_SEEDED = StateRule("2 r max(m, n)", lambda s, r: 2 * r * max(s))
RANK1 = StateRule("2 max(m, n) + min(m, n)", lambda s, r: 2 * max(s) + min(s))
MOMENTUM_AND_ROWS = StateRule("m n + m", lambda s, r: numel(s) + s[0])  # NorMuon


def total_elements(
    rules: dict[str, StateRule], shapes: Iterable[tuple[str, tuple[int, ...]]], rank: int
) -> int:
    """Sum of ``rules[role](shape, rank)`` over ``(role, shape)`` pairs (a model's tensors).

    >>> total_elements({"hidden": per_element(1), "vector": per_element(2)},
    ...                [("hidden", (4, 4)), ("vector", (4,))], rank=1)
    24
    """
    return sum(rules[role](shape, rank) for role, shape in shapes)


def describe_rules(rules: dict[str, StateRule]) -> str:
    """``"1 x output; 2 x vector"``: the non-zero rules in words, roles sharing a rule joined.

    >>> describe_rules({"embedding": NO_STATE, "hidden": NO_STATE, "output": per_element(1), "vector": per_element(2)})
    '1 x output; 2 x vector'
    """
    by_text: dict[str, list[str]] = {}
    for role, rule in rules.items():
        if rule.text != NO_STATE.text:
            by_text.setdefault(rule.text, []).append(role)
    return "; ".join(f"{text} {', '.join(roles)}" for text, roles in by_text.items()) or "none"
