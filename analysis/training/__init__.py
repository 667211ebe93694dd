"""Training: config, loop, lr schedule, data parallelism, checkpoints and evaluation.

``from analysis.training import TrainConfig, train`` (or ``from analysis import train``) is the
importable trainer, a plain function; ``python -m analysis.training`` (``scale-lab train``) is
its command line (``analysis.training.cli``).
"""

from analysis.training.cli import main
from analysis.training.config import ConfigError, TrainConfig
from analysis.training.loop import TrainResult, train
from analysis.training.stopping import TrainingDiverged, TrainingInterrupted

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "main",
    "train",
]
