"""Solutions to the notebooks' "implement" exercises, kept apart from the notebooks.

Read one after trying: each is the plain rule the grader (``analysis.teaching.exercises``)
compares against the library. The tests fill them in (``SCALE_LAB_SOLUTIONS=1``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from analysis.optim.roles import by_name
from analysis.optim.transforms import chain, momentum, normalize
from analysis.optim.variants import unit_rows
from toy_models import quadratic
from toy_models.llama import load_config, matrix_shapes


def sgd_floor(lr, sigma):
    """Notebook 01: SGD's stationary loss, ``sum_i lr sigma^2 h_i / (4 (1 - lr h_i / 2))``."""
    h = quadratic.curvatures()
    return float(np.sum(lr * sigma**2 * h / (4 * (1 - lr * h / 2))))


def momentum_before_normalization(grads, beta):
    """Notebook 01: SCALE's output rule, EMA first, then unit RMS per row."""
    m = torch.zeros_like(grads[0])
    directions = []
    for g in grads:
        m = beta * m + (1 - beta) * g
        rms = m.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-8)
        directions.append(m / rms)
    return directions


def col_normalize(grad):
    """Notebook 02: one unit RMS per output unit (torch row), floored at 1e-8."""
    rms = grad.square().mean(dim=1, keepdim=True).sqrt()
    return grad / rms.clamp_min(1e-8)


def microbatch_variance(micro_grads):
    """Notebook 03: ``(sum_k ||g_k||^2 - K ||g_bar||^2) / (K - 1)``."""
    k = len(micro_grads)
    mean = sum(micro_grads) / k
    total = sum(float(g.double().square().sum()) for g in micro_grads)
    return (total - k * float(mean.double().square().sum())) / (k - 1)


def stable_rank(update):
    """Notebook 05: ``||U||_F^2 / ||U||_2^2``."""
    s = torch.linalg.svdvals(update.double())
    return float(s.square().sum() / s[0] ** 2)


def state_elements(recipe, model):
    """Notebook 06: state elements. AdamW: two per parameter; SCALE: one buffer on the output
    layer and Adam's two on the vectors; SGD: Adam's two on the vectors (the norm gains)."""
    shapes = matrix_shapes(load_config(model))
    count = {
        role: sum(math.prod(shape) for _, r, shape in shapes if r == role)
        for role in ("embedding", "hidden", "output", "vector")
    }
    if recipe == "adamw":
        return 2 * sum(count.values())
    if recipe == "scale":
        return count["output"] + 2 * count["vector"]
    if recipe == "sgd":
        return 2 * count["vector"]
    raise ValueError(f"no solution for {recipe!r}")


def scale_rules():
    """Notebook 04: SCALE from transforms: unit RMS per output unit on every matrix (an
    ``nn.Linear``'s rows, an ``nn.Embedding``'s columns), momentum first on the output layer."""
    return {"hidden": normalize(1), "embedding": normalize(0), "output": chain(momentum(0.9), normalize(1))}


def custom_rules():
    """Notebook 07: the head by name, the custom layer by name with its fan-in axis."""
    return [by_name("output", "classifier.weight"), by_name("hidden", "mixer.weight", fan_in=1)]


def rmnp_hidden(fan_in):
    """Notebook 08: RMNP on a hidden matrix: EMA momentum 0.95, then unit L2 per output unit
    (``unit_rows``; ``normalize`` would give unit RMS, sqrt(fan-in) times larger)."""
    return chain(momentum(0.95), unit_rows(fan_in[0]))
