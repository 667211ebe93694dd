"""Optimizers: per-tensor transforms, the optimizer classes that apply them, layer roles,
recipes and their declared state (torch and the optional pytorch-optimizer only).

``from analysis.optim import build_optimizer`` builds any recipe for a model.
"""

from analysis.optim.hyper import OptimizerConfig, RecipeError
from analysis.optim.recipes import build_optimizer, recipe_names

__all__ = ["OptimizerConfig", "RecipeError", "build_optimizer", "recipe_names"]
