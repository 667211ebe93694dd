"""Training: config, loop, lr schedule, data parallelism, checkpoints and evaluation.

``from analysis.train import TrainConfig, train`` is the importable trainer;
``python -m analysis.train`` (``scale-lab train``) is its command line (``analysis.train.cli``).
"""

from analysis.train.cli import main
from analysis.train.config import ConfigError, TrainConfig
from analysis.train.loop import (
           TrainingDiverged,
           TrainingInterrupted,
           TrainResult,
           train,
)

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "main",
           "train"]
