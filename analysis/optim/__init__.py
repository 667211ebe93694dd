"""Optimizers: per-tensor transforms, the optimizer classes that apply them, layer roles,
recipes and their declared state (torch and the optional pytorch-optimizer only).

``from analysis.optim import build_optimizer`` builds any recipe for a model; the transforms
(``chain``, ``normalize``, ``momentum``, ``scale_by_adam``, ...) and ``ChainedOptimizer``
compose new ones (``analysis.optim.recipes.scale_transforms`` is SCALE written that way).
"""

from analysis.optim.hyper import OptimizerConfig, RecipeError
from analysis.optim.optimizer import ChainedOptimizer, PartitionedOptimizer
from analysis.optim.recipes import build_optimizer, recipe_names, scale_transforms
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

__all__ = [
    "ChainedOptimizer",
    "OptimizerConfig",
    "PartitionedOptimizer",
    "PerLayout",
    "RecipeError",
    "Transform",
    "build_optimizer",
    "chain",
    "momentum",
    "normalize",
    "orthogonalize",
    "recipe_names",
    "scale_by_adam",
    "scale_transforms",
    "sign",
    "tap",
]
