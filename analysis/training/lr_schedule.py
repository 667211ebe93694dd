"""The learning-rate schedule of every run: linear warmup, then cosine to a floor.

For optimizer step ``s`` (0-based) with ``W`` warmup steps, ``T`` steps in all and floor
``r = min_lr_ratio``, the factor multiplying every group's own peak lr is::

    (s + 1) / W                                     for s < W
    r + (1 - r) (1 + cos(pi (s - W) / (T - W))) / 2   afterwards

as the SCALE paper's scripts (warmup 10%, cosine to 10%). Vectors' ``adam_lr`` follows the
same shape because the factor multiplies each group's own lr.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from analysis.training.config import TrainConfig


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """The factor for ``torch.optim.lr_scheduler.LambdaLR`` given ``config``'s steps, warmup
    and ``min_lr_ratio``.

    >>> f = lr_lambda(TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1))
    >>> f(0), f(9), round(f(99), 3)
    (0.1, 1.0, 0.1)
    """
    warmup, total, floor = config.warmup(), config.steps, config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
