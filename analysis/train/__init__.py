"""Training: config, loop, lr schedule, data parallelism, checkpoints and evaluation.

``from analysis.train import TrainConfig, train`` is the importable trainer;
``python -m analysis.train`` (``scale-lab train``) is its command line (``analysis.train.cli``).
The package itself is callable as the trainer, so ``from analysis import train`` (which Python
resolves to this package) trains too: ``train(config)`` is ``analysis.train.loop.train(config)``.
"""

import sys
import types

from analysis.train.cli import main
from analysis.train.config import ConfigError, TrainConfig
from analysis.train.loop import TrainingDiverged, TrainingInterrupted, TrainResult, train


class _CallableTrainer(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)

    __call__.__doc__ = train.__doc__


sys.modules[__name__].__class__ = _CallableTrainer

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "main",
    "train",
]
