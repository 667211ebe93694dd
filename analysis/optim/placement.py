"""A momentum placement as a file: the recipe ``scale-lab advise`` writes and
``scale-lab train --optimizer advised:PATH`` trains.

The file is JSON: ``{"optimizer": <a ladder recipe>, "momentum_on": [<parameter names or
globs>], "beta": <momentum>, ...}``; any other key (the advice's budget, predicted gain,
state bytes) is kept for the reader and ignored by the trainer. The run's ``config.json``
records the recipe and its ``momentum_on`` like any other setting, so a run trained from a
file does not need the file again.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.optim.hyper import RecipeError
from analysis.recording import write_atomic

ADVISED = "advised:"  # --optimizer advised:PATH


def write_placement(path: str | Path, optimizer: str, momentum_on: list[str], beta: float, **about) -> Path:
    """Write the placement file (``about``: what the advice says of it, kept for the reader)."""
    record = {"optimizer": optimizer, "momentum_on": list(momentum_on), "beta": beta, **about}
    return write_atomic(path, json.dumps(record, indent=1, allow_nan=False) + "\n")  # whole or not at all


def read_placement(spec: str) -> dict:
    """``{"optimizer", "momentum_on", "beta"}`` from ``advised:PATH`` (or a bare path);
    ``RecipeError`` naming the file and the fix when it is missing or not a placement."""
    path = Path(spec[len(ADVISED) :] if spec.startswith(ADVISED) else spec)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"no placement file {path}; write one with `scale-lab advise --out DIR`") from None
    except (OSError, ValueError) as err:
        raise RecipeError(
            f"cannot read the placement file {path} ({err}); write it again with `scale-lab advise`"
        ) from None
    missing = (
        [k for k in ("optimizer", "momentum_on") if k not in record] if isinstance(record, dict) else ["all"]
    )
    if missing or not isinstance(record["momentum_on"], list):
        raise RecipeError(
            f"{path} is not a placement file (it needs 'optimizer' and a 'momentum_on' list; missing "
            f"{', '.join(missing) or 'a list'}); write it with `scale-lab advise`"
        )
    return {
        "optimizer": record["optimizer"],
        "momentum_on": tuple(record["momentum_on"]),
        "beta": record.get("beta"),
    }
