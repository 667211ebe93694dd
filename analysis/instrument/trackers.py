"""Send every recorded statistic to an experiment tracker as well; the tidy recording
(``analysis.recording``) stays the source of truth and is written first.

A tracker is any object with ``log_rows(rows)``, ``log_vector(step, param, role, stat,
values)`` and ``close()``; ``Recorder(run_dir, trackers=[...])`` calls them after each write.

- ``TensorBoard(logdir)``: per-layer scalars ``<stat>/<param>``, per-role means
  ``<stat>/role/<role>`` (the paper's per-role view), run-level scalars ``<stat>``, and a
  histogram per vector record (per-unit rows ``grad_row_rms``, ``update_spectrum``), with
  ``torch.utils.tensorboard`` (extra ``trackers``: the ``tensorboard`` package).
- ``DictLogger(log)``: the same per-layer, per-role and run-level scalars as one
  ``log(dict, step=step)`` call per step, the signature of ``wandb.log`` and ``trackio.log``;
  vector records go as lists of values.
- ``WandB(project, dir)``: a W&B run (``wandb``; ``WANDB_MODE=offline`` writes it locally, to
  sync later), vector records as ``wandb.Histogram``; finished on close.
- ``Trackio(project, name)``: a trackio run (local-first: a SQLite file under ``TRACKIO_DIR``),
  vector records as ``trackio.Histogram``; finished on close.

``scale-lab train --tensorboard DIR / --wandb PROJECT / --trackio PROJECT`` adds them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable


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


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _needs(package: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f"the {package} tracker needs the {package} package: pip install "
            f"'scale-lab[trackers]' (or pip install {package})"
        ) from None


class TensorBoard:
    """Write the recorded statistics to TensorBoard event files under ``logdir``."""

    def __init__(self, logdir: str):
        _needs("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))

    def log_rows(self, rows) -> None:
        for step, tags in _scalars(rows).items():
            for tag, value in tags.items():
                self.writer.add_scalar(tag, value, step)

    def log_vector(self, step: int, param: str | None, role: str | None, stat: str, values) -> None:
        import numpy as np

        finite = _finite(values)
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


class _HistogramLogger(DictLogger):
    """A ``DictLogger`` whose vector records go as the tracker's own ``histogram`` type."""

    histogram: type

    def log_vector(self, step: int, param: str | None, role: str | None, stat: str, values) -> None:
        finite = _finite(values)
        if finite:
            self.log({f"{stat}/{param}" if param else stat: self.histogram(finite)}, step=int(step))


class WandB(_HistogramLogger):
    """A W&B run receiving every recorded statistic (``mode``: W&B's, e.g. ``"offline"``;
    default from ``WANDB_MODE``)."""

    def __init__(
        self,
        project: str,
        dir: str | None = None,
        name: str | None = None,
        mode: str | None = None,
        config: dict | None = None,
    ):
        wandb = _needs("wandb")
        self.run = wandb.init(project=project, dir=dir, name=name, mode=mode, config=config)
        self.histogram = wandb.Histogram
        super().__init__(self.run.log)

    def close(self) -> None:
        self.run.finish()


class Trackio(_HistogramLogger):
    """A trackio run (local-first) receiving every recorded statistic."""

    def __init__(self, project: str, name: str | None = None, config: dict | None = None):
        self.trackio = _needs("trackio")
        self.run = self.trackio.init(project=project, name=name, config=config, embed=False)
        self.histogram = self.trackio.Histogram
        super().__init__(self.trackio.log)

    def close(self) -> None:
        self.trackio.finish()
