"""Your own optimizer as a recipe: a transform chain per role, registered under a name, so
``build_optimizer``, the trainer, the recordings and the race (``analysis.teaching.race``)
treat it like SCALE.

``design(hidden=..., embedding=..., output=..., vector=...)`` takes, per role, a transform or
a function ``fan_in -> transform`` (a matrix's fan-in axes, ``analysis.optim.roles``: ``(1,)``
for an ``nn.Linear``, ``(0,)`` for an ``nn.Embedding``), so "normalize per output unit" is
``lambda fan_in: normalize(fan_in)`` whatever the layer. A role left out keeps plain SGD's
direction; ``vector`` defaults to the ladder's Adam (the SCALE release's rule, eps on the
uncorrected second moment; ``vector_rule="torch"`` for torch's), so a design differs from
SCALE only where the designer says::

    register_design("scale+embedding", design(
        hidden=lambda fan_in: normalize(fan_in),
        embedding=lambda fan_in: chain(momentum(0.9), normalize(fan_in)),
        output=lambda fan_in: chain(momentum(0.9), normalize(fan_in))))

The state a design keeps is read from its transforms (``init`` on a meta tensor of each
shape), so the memory accounting of ``--optimizer list`` is exact for any chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

import analysis.optim.recipes as recipes
from analysis.optim.hyper import MATRIX_ROLES, OptimizerConfig, role_groups
from analysis.optim.optimizer import ChainedOptimizer
from analysis.optim.state import StateRule
from analysis.optim.transforms import PerLayout, Transform, chain, scale_by_adam, tap

Part = Transform | Callable[[tuple[int, ...]], Transform]


def _design_rule(part: Part | None) -> PerLayout:
    """``part`` as a per-layout transform ending in the ``update`` tap (the instrumentation
    records every design's update)."""
    build = part if callable(part) and not isinstance(part, Transform) else (lambda fan_in: part)
    return PerLayout(lambda fan_in: chain(*(t for t in [build(fan_in)] if t is not None), tap("update")))


def design(
    hidden: Part | None = None,
    embedding: Part | None = None,
    output: Part | None = None,
    vector: Transform | None = None,
) -> Callable[[OptimizerConfig], dict]:
    """Transforms per role for ``register_design`` (None: plain SGD's direction; vectors: the
    ladder's Adam, by the config's ``vector_rule``)."""
    parts = {"hidden": hidden, "embedding": embedding, "output": output}

    def transforms(cfg: OptimizerConfig) -> dict:
        made = {role: _design_rule(parts[role]) for role in MATRIX_ROLES}
        eps_on = "corrected" if cfg.vector_rule == "torch" else "raw"
        made["vector"] = chain(vector or scale_by_adam(cfg.betas, cfg.eps, eps_on), tap("update"))
        return made

    return transforms


def _measured(transforms: dict, role: str) -> StateRule:
    """State elements of ``role``'s transform for a tensor of a shape: its ``init`` on the meta
    device, counting tensors of at least one dimension (step counters excluded)."""

    def elements(shape, rank):
        rule = transforms[role]
        if isinstance(rule, PerLayout):
            rule = rule.at((1,) if len(shape) >= 2 else ())
        state = rule.init(torch.empty(shape, device="meta"))
        return sum(v.numel() for v in state.values() if torch.is_tensor(v) and v.ndim >= 1)

    # said as "k x" when it is k per element (what every transform here keeps), else measured
    probe = (6, 10) if role != "vector" else (10,)
    k, rest = divmod(elements(probe, 1), math.prod(probe))
    return StateRule(f"{k} x" if not rest else "as its transforms keep", elements)


def register_design(
    name: str,
    transforms: Callable[[OptimizerConfig], dict],
    description: str,
    default_lr: float = 1e-3,
    default_adam_lr: float = 2e-2,
) -> None:
    """Register ``transforms`` (from ``design``) as recipe ``name``; a name already used by a
    built-in recipe is refused (``RecipeError``), a design's own name may be registered again."""

    def build(layout, cfg):
        return ChainedOptimizer(role_groups(layout, cfg), transforms(cfg))

    probe = transforms(OptimizerConfig())  # its transforms, for the state they keep
    recipes.register(
        recipes.Recipe(
            name,
            build,
            description,
            default_lr,
            default_adam_lr=default_adam_lr,
            vector_rules=("published", "torch"),  # the ladder's default
            state={role: _measured(probe, role) for role in probe},
        )
    )
