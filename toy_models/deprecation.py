"""Old public names that keep working for one release, each use warning with the new name.

A module that renamed something ends with ``__getattr__ = renamed(__name__, {"old": "new"},
globals())``: Python calls a module's ``__getattr__`` only for names it does not define
(PEP 562), so the new names cost nothing and the old ones say what they became.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable


def renamed(module: str, old_to_new: dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module-level ``__getattr__`` serving each old name as its new one, with a
    ``DeprecationWarning`` naming both."""
    def __getattr__(name: str):
        if name in old_to_new:
            new = old_to_new[name]
            warnings.warn(f"{module}.{name} is now {module}.{new}", DeprecationWarning, stacklevel=2)
            return namespace[new]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return __getattr__
