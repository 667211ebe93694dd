"""scale-lab: optimizers (``optim``; SCALE in one file: ``optim/scale.py``), instrumentation
(``instrument``), training (``training``), results (``results``), the comparison protocol
(``protocol``), the placement advisor (``advice``) and teaching (``teaching``) for studying
SCALE (arXiv 2506.16659) and its baselines; ``recording`` is the run-directory schema.

The short path to each, imported on first use so that ``import analysis`` stays fast::

    from analysis import build_optimizer, Instrumentation, InstrumentConfig, train, TrainConfig, load_run, advise
"""

from __future__ import annotations

import importlib

# name -> the module that defines it (one definition each; these are re-exports)
PUBLIC = {
    "build_optimizer": "analysis.optim.recipes",
    "recipe_names": "analysis.optim.recipes",
    "OptimizerConfig": "analysis.optim.hyper",
    "Instrumentation": "analysis.instrument.hooks",
    "InstrumentConfig": "analysis.instrument.schedule",
    "train": "analysis.training.loop",
    "TrainConfig": "analysis.training.config",
    "advise": "analysis.advice.advisor",
    "load_run": "analysis.recording",
    "load_runs": "analysis.results.root",
    "Recorder": "analysis.recording",
}

__all__ = sorted(PUBLIC)


def __getattr__(name: str):
    if name in PUBLIC:
        module = PUBLIC[name]
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(PUBLIC))
