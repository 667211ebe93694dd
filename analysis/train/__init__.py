"""The old name of ``analysis.training``, kept for one release: importing it warns and gives the
same modules (``analysis.train.config`` is ``analysis.training.config``, not a copy).

The package was renamed so that ``from analysis import train`` is the trainer function itself.
"""

import importlib
import pkgutil
import sys
import warnings

import analysis.training as _training

warnings.warn(
    "analysis.train is now analysis.training (the old name goes in the next release): import "
    "from analysis.training, or run python -m analysis.training",
    FutureWarning,  # shown by default: the reader is the user whose import names the old path
    stacklevel=2,
)
for _module in pkgutil.iter_modules(_training.__path__):
    if _module.name != "__main__":
        _same = importlib.import_module(f"analysis.training.{_module.name}")
        sys.modules[f"{__name__}.{_module.name}"] = globals()[_module.name] = _same

from analysis.training import *  # noqa: E402,F403 (the old package's names)
from analysis.training import __all__ as __all__  # noqa: E402
