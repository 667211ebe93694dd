"""Send every recorded statistic to an experiment tracker as well; the tidy recording
(``analysis.recording``) stays the source of truth and is written first.

A tracker is any object with ``log_rows(rows)``, ``log_vector(step, param, role, stat,
values)`` and ``close()``; ``Recorder(run_dir, trackers=[...])`` calls them after each write.

- ``TensorBoard(logdir)``: per-layer scalars ``<stat>/<param>``, per-role means
  ``<stat>/role/<role>`` (the paper's per-role view), run-level scalars ``<stat>``, and a
  histogram per vector record (column-norm rows ``grad_row_rms``, ``update_spectrum``), with
  ``torch.utils.tensorboard`` (extra ``trackers``: the ``tensorboard`` package).
- ``DictLogger(log)``: the same per-layer, per-role and run-level scalars as one
  ``log(dict, step=step)`` call per step, the signature of ``wandb.log`` and ``trackio.log``:
  ``DictLogger(wandb.init(project="p", mode="offline").log)`` or
  ``DictLogger(trackio.init(project="p").log)``; vector records go as lists of values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable


def _scalars(rows) -> dict[int, dict[str, float]]:
    """``{step: {tag: value}}``: per-layer, per-role mean and run-level tags of ``rows``."""
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    role_values: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for step, param, role, stat, value in rows:
        value = float(value)
        if param is None:
            by_step[int(step)][stat] = value
            continue
        by_step[int(step)][f"{stat}/{param}"] = value
        if role is not None and math.isfinite(value):
            role_values[(int(step), stat, role)].append(value)
    for (step, stat, role), values in role_values.items():
        by_step[step][f"{stat}/role/{role}"] = sum(values) / len(values)
    return by_step


class TensorBoard:
    """Write the recorded statistics to TensorBoard event files under ``logdir``."""

    def __init__(self, logdir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("the TensorBoard tracker needs the tensorboard package: "
                              "pip install 'scale-lab[trackers]' (or pip install tensorboard)") from None
        self.writer = SummaryWriter(log_dir=str(logdir))

    def log_rows(self, rows) -> None:
        for step, tags in _scalars(rows).items():
            for tag, value in tags.items():
                self.writer.add_scalar(tag, value, step)

    def log_vector(self, step: int, param: str | None, role: str | None, stat: str, values) -> None:
        import numpy as np

        finite = [v for v in values if v is not None and math.isfinite(v)]
        if finite:
            self.writer.add_histogram(f"{stat}/{param}" if param else stat, np.asarray(finite), step)

    def close(self) -> None:
        self.writer.close()


class DictLogger:
    """Send the statistics as ``log(dict, step=step)`` calls (W&B, trackio and the like)."""

    def __init__(self, log: Callable[..., object]):
        self.log = log

    def log_rows(self, rows) -> None:
        for step, tags in sorted(_scalars(rows).items()):
            self.log(tags, step=step)

    def log_vector(self, step: int, param: str | None, role: str | None, stat: str, values) -> None:
        self.log({f"{stat}/{param}" if param else stat: list(values)}, step=int(step))

    def close(self) -> None:
        """Nothing to close: the caller owns the run (``wandb.finish()``, ``trackio.finish()``)."""
