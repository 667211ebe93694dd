"""Recipes: one-word names that build an optimizer for a model.

The normalization ladder (the paper's bottom-up argument), each with a momentum placement
``none | output | embedding | all`` (``last``/``first`` are accepted aliases):

=============== ====================================================================
``sgd``          u = g (plain SGD)
``sign``         u = sign(g)
``row_norm``     unit RMS per input feature (the other axis: torch dim 0 of a Linear)
``col_norm``     unit RMS per output unit (the paper's column-wise; torch dim 1, embedding dim 0)
``spectral_norm`` Newton-Schulz polar factor, rescaled to unit RMS
``scale``        ``col_norm`` with momentum on the output layer only (SCALE, exactly)
=============== ====================================================================

Momentum, where placed, comes before the direction map: ``m <- beta m + (1-beta) g``, then
``u = map(m)`` (as SCALE). Vectors (RMSNorm gains) always get Adam with their own peak
learning rate ``adam_lr`` on the same schedule shape; ``vector_rule`` picks its form:
``published`` (the default of the ladder: the SCALE code release's rule, arXiv 2506.16659,
eps on the uncorrected second moment and the group's weight decay applied to vectors at
``adam_lr``) or ``torch`` (torch AdamW's eps placement, no decay on vectors). Weight decay is
decoupled, ``p <- p (1 - lr wd) - lr u``, as in the release: against its update rule in
float64 with weight decay 0.1 the two agree to 7e-15 (rounding), so no ordering difference
remains.

Hyperparameters and the learning-rate structure shared by every recipe: ``analysis.optim.hyper``.

Baselines: ``adamw`` (``torch.optim.AdamW``), ``muon`` (``torch.optim.Muon`` on hidden matrices,
AdamW on the rest), ``adafactor`` (``torch.optim.Adafactor``), and ``galore``, ``fira``,
``apollo``, ``apollo_mini`` from the ``pytorch-optimizer`` package (extra ``baselines``) on hidden
matrices with AdamW elsewhere, as the GaLore-protocol papers apply them; ``swan`` and
``stable_spam`` written from their papers' rules (``analysis.optim.baselines`` says what
could not be pinned down); ``rmnp``, ``normuon`` and ``muoneq`` as transform chains on hidden
matrices with AdamW elsewhere (``analysis.optim.variants``: the rules and what could not be
pinned down).

``apollo_mini`` at its default scale (128) is chaotic on a tiny model: on ``nano`` a change of
every initial weight by one float32 ulp moves its loss by up to 7% within 20 steps (every other
recipe: under 3e-6), and one thread against two by as much; its 20-step losses are a
distribution, not a number (``tests.golden`` checks them against a band).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

import analysis.optim.library as library
from analysis.optim.baselines import stable_spam, swan
from analysis.optim.hyper import (
    MATRIX_ROLES,
    PLACEMENTS,
    VECTOR_RULES,
    OptimizerConfig,
    RecipeError,
    role_groups,
)
from analysis.optim.ladder import ladder_transforms
from analysis.optim.optimizer import ChainedOptimizer
from analysis.optim.roles import ROLES, assign
from analysis.optim.state import (
    FACTORED,
    MOMENTUM_AND_ROWS,
    NO_STATE,
    StateRule,
    describe_rules,
    per_element,
    total_elements,
)
from analysis.optim.transforms import Transform
from analysis.optim.variants import hidden_with_adamw


@dataclass(frozen=True)
class Recipe:
    """A named optimizer for a model.

    ``build(model, cfg)`` returns the optimizer; ``state`` declares the elements it keeps per
    role (``analysis.optim.state``). A ladder recipe (``placeable``) declares none for its
    matrices: its matrix state is one momentum buffer on each role its placement names
    (``default_momentum`` unless the config says otherwise).
    """

    name: str
    build: Callable[[nn.Module, OptimizerConfig], torch.optim.Optimizer]
    description: str
    default_lr: float
    default_adam_lr: float | None = None  # None: the vectors share ``lr``
    default_momentum: str = "none"
    vector_rules: tuple[str, ...] = ("torch",)  # accepted vector rules, the default first
    state: dict[str, StateRule] = field(default_factory=dict)
    placeable: bool = False
    extra: str | None = None  # pip extra needed
    user: bool = False  # a user's design (``analysis.optim.designs``)

    def resolve(self, cfg: OptimizerConfig) -> OptimizerConfig:
        """``cfg`` with every None default filled from this recipe, validated."""
        lr = cfg.lr if cfg.lr is not None else self.default_lr
        adam_lr = cfg.adam_lr if cfg.adam_lr is not None else (self.default_adam_lr or lr)
        rule = cfg.vector_rule or self.vector_rules[0]
        if rule not in self.vector_rules:
            raise RecipeError(
                f"{self.name} updates vectors with torch's AdamW rule; "
                f"vector_rule {rule!r} applies to the ladder recipes (sgd .. scale)"
            )
        if cfg.momentum_on and not self.placeable:
            raise RecipeError(
                f"{self.name} does not place momentum per matrix; momentum_on applies to the ladder "
                "recipes (sgd, sign, row_norm, col_norm, spectral_norm, scale)"
            )
        return replace(
            cfg, lr=lr, adam_lr=adam_lr, vector_rule=rule, momentum=cfg.momentum or self.default_momentum
        ).validate()

    def state_rules(self, momentum: str | None = None) -> dict[str, StateRule]:
        """The state rule per role; for a ladder recipe, with momentum placed at ``momentum``."""
        if not self.placeable:
            return dict(self.state)
        placed = PLACEMENTS[momentum or self.default_momentum]
        rules = {role: per_element(1) if role in placed else NO_STATE for role in MATRIX_ROLES}
        return rules | {"vector": per_element(2)}


# ----------------------------------------------------------------------------- SCALE


def scale_transforms(cfg: OptimizerConfig) -> dict[str, Transform]:
    """SCALE, per role (arXiv 2506.16659, Algorithm 1, and its code release). For a matrix with
    gradient ``G`` and fan-in axes ``a`` (a torch Linear's rows: one scale per output unit; the
    embedding's dim 0, ``analysis.optim.roles``):

        hidden, embedding:  U = G / max(rms_a(G), 1e-8)
        output:             m <- beta m + (1 - beta) G;   U = m / max(rms_a(m), 1e-8)
        vectors:            the release's Adam (eps on the uncorrected second moment)

    and every parameter steps ``p <- p (1 - lr wd) - lr U`` (``ChainedOptimizer``). The output
    layer's momentum is the only matrix state. It is the ladder's ``col_norm`` rung with
    momentum on the output layer (``analysis.optim.ladder``), built there, so the recipe and the
    ablation cannot drift apart; ``analysis/optim/scale.py`` writes it out in one file."""

    return ladder_transforms("col_norm", "output", cfg)  # the one definition: the ladder's rung


# ----------------------------------------------------------------------------- the ladder


def _ladder(kind: str):
    def build(layout, cfg):
        return ChainedOptimizer(role_groups(layout, cfg), ladder_transforms(kind, cfg.momentum, cfg))

    return build


def _scale(layout, cfg):
    if cfg.momentum not in ("output", "last"):
        raise RecipeError(
            "scale is col_norm with momentum on the output layer; for another "
            f"placement use --optimizer col_norm --momentum {cfg.momentum}"
        )
    if not layout.by_role()["output"]:
        raise RecipeError(
            f"scale puts momentum on the output layer, and no parameter of "
            f"{type(layout.model).__name__} has the role 'output' (the default "
            "rule finds it by get_output_embeddings()); name it with a rule, e.g. "
            "rules=[by_name('output', 'head.weight')]"
        )
    return ChainedOptimizer(role_groups(layout, cfg), scale_transforms(cfg))


LADDER = {
    "sgd": "plain SGD, u = g",
    "sign": "sign descent, u = sign(g)",
    "row_norm": "unit RMS per input feature (the other axis)",
    "col_norm": "unit RMS per output unit (the paper's column-wise normalization)",
    "spectral_norm": "Newton-Schulz orthogonalized gradient, unit RMS",
}

ADAM_EVERYWHERE = {role: per_element(2) for role in ROLES}


def _with_hidden(rule: StateRule) -> dict[str, StateRule]:
    """A hidden-matrix optimizer partnered with AdamW on the other roles."""
    return ADAM_EVERYWHERE | {"hidden": rule}


LADDER_DEFAULTS = {"placeable": True, "default_adam_lr": 2e-2, "vector_rules": VECTOR_RULES}
LADDER_LRS = {"sgd": 0.5, "sign": 1e-3, "row_norm": 1e-3, "col_norm": 1e-3, "spectral_norm": 1e-3}
VARIANTS = {
    "rmnp": ("RMNP: EMA momentum, unit L2 per output unit", per_element(1)),
    "normuon": ("NorMuon: Muon, then a second moment per unit", MOMENTUM_AND_ROWS),
    "muoneq": ("MuonEq-R: unit rows, then Newton-Schulz", per_element(1)),
}
# Every built-in recipe: (name, builder, description, default lr) and its other defaults.
BUILT_IN: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        *(
            Recipe(
                kind,
                _ladder(kind),
                f"{text}; momentum placement via --momentum",
                LADDER_LRS[kind],
                **LADDER_DEFAULTS,
            )
            for kind, text in LADDER.items()
        ),
        Recipe(
            "sgd_momentum",
            _ladder("sgd"),
            "SGD with EMA momentum on every matrix",
            0.5,
            **(LADDER_DEFAULTS | {"default_momentum": "all"}),
        ),
        Recipe(
            "scale",
            _scale,
            "SCALE: col_norm + EMA momentum on the output layer only",
            1e-3,
            **(LADDER_DEFAULTS | {"default_momentum": "output"}),
        ),
        Recipe("adamw", library.adamw, "torch.optim.AdamW on every parameter", 1e-3, state=ADAM_EVERYWHERE),
        Recipe(
            "muon",
            library.muon,
            "torch.optim.Muon on hidden matrices, AdamW on the rest",
            1e-3,
            state=_with_hidden(per_element(1)),
        ),
        *(
            Recipe(
                name,
                hidden_with_adamw(name),
                f"{text} (hidden); AdamW elsewhere",
                1e-3,
                state=_with_hidden(rule),
            )
            for name, (text, rule) in VARIANTS.items()
        ),
        Recipe(
            "swan",
            swan,
            "SWAN: GradNorm + whitening (Newton-Schulz) on hidden matrices, stateless; Adam elsewhere",
            1e-3,
            state=_with_hidden(NO_STATE),
        ),
        # Stable-SPAM's 3 scalars per tensor are not counted, like step counters.
        Recipe(
            "stable_spam",
            stable_spam,
            "Stable-SPAM: Adam after spike clipping and norm scaling, moments reset every 1000 steps",
            1e-3,
            state=ADAM_EVERYWHERE,
        ),
        Recipe(
            "adafactor",
            library.adafactor,
            "torch.optim.Adafactor (factored second moment)",
            1e-2,
            state={role: FACTORED for role in ROLES},
        ),
        *(
            Recipe(
                name,
                library.low_rank(cls, **keys),
                f"{text}; hidden matrices, AdamW elsewhere",
                1e-3,
                state=_with_hidden(rule),
                extra="baselines",
            )
            for name, (cls, keys, rule, text) in library.LOW_RANK.items()
        ),
    )
}
USER: dict[str, Recipe] = {}  # a user's designs (``analysis.optim.designs.register_design``)


def _recipes() -> dict[str, Recipe]:
    return BUILT_IN | USER


def register(recipe: Recipe) -> None:
    """Add a user's ``recipe`` (``user=True``; ``analysis.optim.designs.register_design``); a
    built-in recipe's name is refused, a user recipe's name may be registered again."""
    if recipe.name in BUILT_IN:
        raise RecipeError(f"{recipe.name!r} is a built-in recipe; give your design another name")
    USER[recipe.name] = replace(recipe, user=True)


def recipe_names() -> list[str]:
    """Every registered recipe name, ladder first."""
    return list(_recipes())


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; ``RecipeError`` (with the choices, or the pip extra to
    install) when it is unknown or its package is missing."""
    recipes = _recipes()
    if name not in recipes:
        raise RecipeError(
            f"unknown optimizer {name!r}; choose one of {', '.join(recipes)} "
            "(or `scale-lab train --optimizer list`)"
        )
    recipe = recipes[name]
    if recipe.extra == "baselines" and importlib.util.find_spec("pytorch_optimizer") is None:
        raise RecipeError(
            f"optimizer {name!r} needs the pytorch-optimizer package: pip install 'scale-lab[baselines]'"
        )
    return recipe


def build_optimizer(
    name: str,
    model: nn.Module,
    cfg: OptimizerConfig | None = None,
    rules=None,
    fused: bool = False,
    **overrides,
) -> torch.optim.Optimizer:
    """Build recipe ``name`` for ``model``.

    Args: ``cfg`` (default ``OptimizerConfig()``) and keyword ``overrides`` of its fields;
    lr, adam_lr and momentum left unset take the recipe's defaults. ``rules``: a user's role
    rules, tried before the defaults (``analysis.optim.roles``: ``by_type``, ``by_name``,
    ``tied``). Returns a ``torch.optim.Optimizer`` whose groups are labelled by role, with
    the model's ``layout`` (``describe()`` prints its roles table). ``fused``: compile the
    rules that have a fused equivalent (``analysis.optim.fused``; the same update, faster).
    Raises ``RecipeError`` and ``RoleError``.
    """
    recipe = get_recipe(name)
    cfg = recipe.resolve(replace(cfg or OptimizerConfig(), **overrides))
    layout = assign(model, rules)
    optimizer = recipe.build(layout, cfg)
    optimizer.layout, optimizer.recipe = layout, name  # describe() and recordings read them
    for inner in getattr(optimizer, "optimizers", [optimizer]):
        if isinstance(inner, ChainedOptimizer):
            inner.fused = fused
    return optimizer


def declared_state_elements(name: str, shapes, rank: int, momentum: str | None = None) -> int:
    """Optimizer-state elements recipe ``name`` keeps for a model's ``(role, shape)`` pairs
    (``toy_models.llama.matrix_shapes`` gives them from a config), from its declaration."""
    return total_elements(get_recipe(name).state_rules(momentum), shapes, rank)


def recipe_rows() -> list[dict]:
    """One row per recipe: name, default lr, description, the state it keeps (in words, from
    its declaration) and the extra package it needs (or None)."""
    return [
        {
            "name": r.name,
            "lr": r.default_lr,
            "description": r.description,
            "state": describe_rules(r.state_rules()),
            "extra": r.extra,
        }
        for r in _recipes().values()
    ]


def recipe_table() -> str:
    """``recipe_rows`` as the text ``scale-lab train --optimizer list`` prints."""
    lines = [f"{'name':<14} {'lr':>6}  {'description':<72} state"]
    for r in recipe_rows():
        extra = f" [extra: {r['extra']}]" if r["extra"] else ""
        lines.append(f"{r['name']:<14} {r['lr']:>6g}  {r['description']:<72} {r['state']}{extra}")
    return "\n".join(lines)
