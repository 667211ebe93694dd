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
``u = map(m)`` (as SCALE). Vectors (RMSNorm gains) always get bias-corrected AdamW with their
own peak learning rate ``adam_lr`` on the same schedule shape.

Baselines: ``adamw`` (``torch.optim.AdamW``), ``muon`` (``torch.optim.Muon`` on hidden matrices,
AdamW on the rest), ``adafactor`` (``torch.optim.Adafactor``), and ``galore``, ``fira``,
``apollo``, ``apollo_mini`` from the ``pytorch-optimizer`` package (extra ``baselines``) on hidden
matrices with AdamW elsewhere, as the GaLore-protocol papers apply them; ``swan`` and
``stable_spam`` written from their papers' rules (``analysis.baseline_transforms`` says what
could not be pinned down).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from analysis.optimizer import ChainedOptimizer, PartitionedOptimizer
from analysis.roles import params_by_role
from analysis.transforms import (Transform, chain, momentum, normalize, orthogonalize,
                                 scale_by_adam, sign, tap)

PLACEMENTS = {"none": (), "output": ("output",), "last": ("output",),
              "embedding": ("embedding",), "first": ("embedding",),
              "all": ("embedding", "hidden", "output")}
MATRIX_ROLES = ("embedding", "hidden", "output")


class RecipeError(ValueError):
    pass


@dataclass(frozen=True)
class OptimizerConfig:
    """Hyperparameters shared by every recipe (each uses the ones it needs)."""

    lr: float = 1e-3
    adam_lr: float | None = None       # vectors' (and AdamW partitions') peak lr; None -> lr
    beta: float = 0.9                  # momentum
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: str | None = None        # placement for ladder recipes; None -> recipe default
    rank: int | None = None            # low-rank baselines; None -> hidden_size // 4
    update_proj_gap: int = 200
    ns_steps: int = 5
    spam_gammas: tuple[float, float, float] = (0.7, 0.9, 0.999)   # Stable-SPAM gamma1..3
    reset_every: int = 1000                                      # Stable-SPAM momentum reset

    def validate(self) -> "OptimizerConfig":
        if not self.lr > 0:
            raise RecipeError(f"lr must be > 0, got {self.lr}; pass e.g. --lr 1e-3")
        if self.adam_lr is not None and not self.adam_lr > 0:
            raise RecipeError(f"adam_lr must be > 0, got {self.adam_lr}")
        if not 0.0 <= self.beta < 1.0:
            raise RecipeError(f"momentum beta must be in [0, 1), got {self.beta}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise RecipeError(f"betas must be in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise RecipeError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.momentum is not None and self.momentum not in PLACEMENTS:
            raise RecipeError(f"unknown momentum placement {self.momentum!r}; choose one of "
                              f"{', '.join(PLACEMENTS)}")
        if self.rank is not None and self.rank < 1:
            raise RecipeError(f"rank must be >= 1, got {self.rank}")
        return self


@dataclass(frozen=True)
class Recipe:
    name: str
    build: Callable[[nn.Module, OptimizerConfig], torch.optim.Optimizer]
    description: str
    state: str                          # state kept, in words (for `--optimizer list`)
    default_lr: float
    default_adam_lr: float = 2e-2
    default_momentum: str = "none"
    extra: str | None = None            # pip extra needed


# ----------------------------------------------------------------------------- the ladder

def direction_map(kind: str, role: str, cfg: OptimizerConfig) -> Transform:
    """The per-matrix direction of a ladder recipe; ``role`` picks the fan-in axis."""
    fan_in = 0 if role == "embedding" else 1
    if kind == "sgd":
        return Transform()
    if kind == "sign":
        return sign()
    if kind == "col_norm":
        return normalize(fan_in)
    if kind == "row_norm":
        return normalize(1 - fan_in)
    if kind == "spectral_norm":
        return orthogonalize(cfg.ns_steps)
    raise RecipeError(f"unknown direction {kind!r}")


def ladder_transforms(kind: str, placement: str, cfg: OptimizerConfig) -> dict[str, Transform]:
    with_momentum = PLACEMENTS[placement]
    transforms = {}
    for role in MATRIX_ROLES:
        parts = [momentum(cfg.beta), tap("momentum")] if role in with_momentum else []
        transforms[role] = chain(*parts, direction_map(kind, role, cfg), tap("update"))
    transforms["vector"] = chain(scale_by_adam(cfg.betas, cfg.eps), tap("update"))
    return transforms


def _role_groups(model, cfg: OptimizerConfig, adam_roles=("vector",)) -> list[dict]:
    groups = []
    for role, named in params_by_role(model).items():
        if named:
            lr = (cfg.adam_lr or cfg.lr) if role in adam_roles else cfg.lr
            wd = 0.0 if role == "vector" else cfg.weight_decay
            groups.append({"params": [p for _, p in named], "names": [n for n, _ in named],
                           "label": role, "lr": lr, "weight_decay": wd})
    return groups


def _ladder(kind: str):
    def build(model, cfg):
        placement = cfg.momentum or "none"
        return ChainedOptimizer(_role_groups(model, cfg), ladder_transforms(kind, placement, cfg))
    return build


def _scale(model, cfg):
    if cfg.momentum not in (None, "output", "last"):
        raise RecipeError("scale is col_norm with momentum on the output layer; for another "
                          f"placement use --optimizer col_norm --momentum {cfg.momentum}")
    return ChainedOptimizer(_role_groups(model, cfg), ladder_transforms("col_norm", "output", cfg))


# ----------------------------------------------------------------------------- baselines

def _adamw_groups(model, cfg, roles, lr):
    named = params_by_role(model)
    groups = []
    for role in roles:
        if named.get(role):
            groups.append({"params": [p for _, p in named[role]], "names": [n for n, _ in named[role]],
                           "label": role, "lr": lr,
                           "weight_decay": 0.0 if role == "vector" else cfg.weight_decay})
    return groups


def _adamw(model, cfg):
    return torch.optim.AdamW(_adamw_groups(model, cfg, ("embedding", "hidden", "output", "vector"),
                                           cfg.lr), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


def _rest_adamw(model, cfg):
    return torch.optim.AdamW(_adamw_groups(model, cfg, ("embedding", "output", "vector"),
                                           cfg.adam_lr or cfg.lr),
                             betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def _muon(model, cfg):
    hidden = params_by_role(model)["hidden"]
    # Moonshot's RMS matching (0.2 sqrt(max(A, B)) lr) lets Muon share AdamW's learning rates.
    muon = torch.optim.Muon([{"params": [p for _, p in hidden], "names": [n for n, _ in hidden],
                              "label": "hidden"}], lr=cfg.lr, weight_decay=cfg.weight_decay,
                            momentum=0.95, nesterov=True, ns_steps=cfg.ns_steps,
                            adjust_lr_fn="match_rms_adamw")
    return PartitionedOptimizer([muon, _rest_adamw(model, cfg)])


def _swan(model, cfg):
    """SWAN: GradNorm then whitening on hidden matrices (stateless); Adam elsewhere."""
    from analysis.baseline_transforms import standardize

    transforms = {"hidden": chain(standardize(1), orthogonalize(cfg.ns_steps), tap("update"))}
    for role in ("embedding", "output", "vector"):
        transforms[role] = chain(scale_by_adam(cfg.betas, cfg.eps), tap("update"))
    groups = _role_groups(model, cfg, adam_roles=("embedding", "output", "vector"))
    return ChainedOptimizer(groups, transforms)


def _stable_spam(model, cfg):
    """Stable-SPAM on every parameter: spike clipping, norm scaling, Adam with resets."""
    from analysis.baseline_transforms import adam_with_reset, norm_scale, spike_clip

    g1, g2, g3 = cfg.spam_gammas
    rule = chain(spike_clip(g3), norm_scale(g1, g2),
                 adam_with_reset(cfg.betas, cfg.eps, cfg.reset_every), tap("update"))
    groups = _adamw_groups(model, cfg, ("embedding", "hidden", "output", "vector"), cfg.lr)
    return ChainedOptimizer(groups, {g["label"]: rule for g in groups})


def _adafactor(model, cfg):
    return torch.optim.Adafactor(_adamw_groups(model, cfg, ("embedding", "hidden", "output", "vector"),
                                               cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _low_rank(class_name: str, **group_keys):
    def build(model, cfg):
        import pytorch_optimizer

        hidden = params_by_role(model)["hidden"]
        rank = cfg.rank or max(1, model.config.hidden_size // 4)
        keys = {"rank": rank, "update_proj_gap": cfg.update_proj_gap, **group_keys}
        if class_name == "APOLLO" and group_keys.get("scale_type") == "tensor":
            keys["rank"] = 1  # APOLLO-Mini: rank-1 random projection, tensor-wise scaling
        opt = getattr(pytorch_optimizer, class_name)(
            [{"params": [p for _, p in hidden], "names": [n for n, _ in hidden], "label": "hidden",
              **keys}], lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        return PartitionedOptimizer([opt, _rest_adamw(model, cfg)])
    return build


LADDER = {
    "sgd": "plain SGD, u = g",
    "sign": "sign descent, u = sign(g)",
    "row_norm": "unit RMS per input feature (the other axis)",
    "col_norm": "unit RMS per output unit (the paper's column-wise normalization)",
    "spectral_norm": "Newton-Schulz orthogonalized gradient, unit RMS",
}

_REGISTRY: dict[str, Recipe] = {}


def _register(recipe: Recipe):
    _REGISTRY[recipe.name] = recipe


def _populate():
    if _REGISTRY:
        return
    ladder_lr = {"sgd": 0.5, "sign": 1e-3, "row_norm": 1e-3, "col_norm": 1e-3, "spectral_norm": 1e-3}
    for kind, text in LADDER.items():
        _register(Recipe(kind, _ladder(kind), f"{text}; momentum placement via --momentum",
                         "momentum buffers on the placed layers; 2 Adam moments per vector",
                         ladder_lr[kind]))
    _register(Recipe("sgd_momentum", lambda m, c: _ladder("sgd")(m, replace(c, momentum=c.momentum or "all")),
                     "SGD with EMA momentum on every matrix", "1 x every matrix", 0.5,
                     default_momentum="all"))
    _register(Recipe("scale", _scale, "SCALE: col_norm + EMA momentum on the output layer only",
                     "1 x output layer; 2 Adam moments per vector", 1e-3, default_momentum="output"))
    _register(Recipe("adamw", _adamw, "torch.optim.AdamW on every parameter", "2 x every parameter",
                     1e-3))
    _register(Recipe("muon", _muon, "torch.optim.Muon on hidden matrices, AdamW on the rest",
                     "1 x hidden; 2 x embedding, output, vectors", 1e-3, default_adam_lr=1e-3))
    _register(Recipe("swan", _swan, "SWAN: GradNorm + whitening (Newton-Schulz) on hidden matrices, "
                     "stateless; Adam elsewhere", "0 x hidden; 2 x embedding, output, vectors", 1e-3,
                     default_adam_lr=1e-3))
    _register(Recipe("stable_spam", _stable_spam, "Stable-SPAM: Adam after spike clipping and norm "
                     "scaling, moments reset every 1000 steps", "2 x every parameter + 3 scalars "
                     "per tensor", 1e-3))
    _register(Recipe("adafactor", _adafactor, "torch.optim.Adafactor (factored second moment)",
                     "rows + columns per matrix; 1 x vectors", 1e-2))
    low_rank = {
        "galore": ("GaLore", {"scale": 0.25, "projection_type": "std"},
                   "GaLore Adam in a rank-r gradient subspace (SVD projector)"),
        "fira": ("Fira", {"scale": 0.25, "projection_type": "std"},
                 "Fira: GaLore plus the scaled full-rank residual"),
        "apollo": ("APOLLO", {"scale": 1.0, "scale_type": "channel", "projection_type": "random"},
                   "APOLLO: channel-wise scaling from a rank-r random projection"),
        "apollo_mini": ("APOLLO", {"scale": 128.0, "scale_type": "tensor", "projection_type": "random"},
                        "APOLLO-Mini: tensor-wise scaling from a rank-1 random projection"),
    }
    for name, (cls, keys, text) in low_rank.items():
        _register(Recipe(name, _low_rank(cls, **keys), f"{text}; hidden matrices, AdamW elsewhere",
                         "low-rank moments (+ projector) per hidden matrix; 2 x the rest", 1e-3,
                         default_adam_lr=1e-3, extra="baselines"))


def recipe_names() -> list[str]:
    _populate()
    return list(_REGISTRY)


def get_recipe(name: str) -> Recipe:
    _populate()
    if name not in _REGISTRY:
        raise RecipeError(f"unknown optimizer {name!r}; choose one of {', '.join(_REGISTRY)} "
                          "(or `scale-lab train --optimizer list`)")
    recipe = _REGISTRY[name]
    if recipe.extra == "baselines" and importlib.util.find_spec("pytorch_optimizer") is None:
        raise RecipeError(f"optimizer {name!r} needs the pytorch-optimizer package: "
                          "pip install 'scale-lab[baselines]'")
    return recipe


def build_optimizer(name: str, model: nn.Module, cfg: OptimizerConfig | None = None,
                    **overrides) -> torch.optim.Optimizer:
    """Build recipe ``name`` for ``model``; unset lr/adam_lr/momentum take the recipe's defaults."""
    recipe = get_recipe(name)
    if cfg is None:
        cfg = OptimizerConfig(lr=recipe.default_lr, adam_lr=recipe.default_adam_lr)
    cfg = replace(cfg, **overrides).validate()
    return recipe.build(model, cfg)


def recipe_table() -> str:
    """One line per recipe: name, default lr, description, state kept."""
    _populate()
    rows = [f"{'name':<14} {'lr':>6}  {'description':<72} state"]
    for r in _REGISTRY.values():
        extra = f" [extra: {r.extra}]" if r.extra else ""
        rows.append(f"{r.name:<14} {r.default_lr:>6g}  {r.description:<72} {r.state}{extra}")
    return "\n".join(rows)
