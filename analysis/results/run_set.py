"""The recordings a figure reads: the runs under one directory as DataFrames (``RunSet``),
``MissingData`` when a figure's input is not there, and what a run's configuration says about
a recorded vector (``spectrum_ranks``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.instrument.spectra import log_spaced
from analysis.recording import RecordingError, read_json, run_config, run_settings
from analysis.results.root import load_runs, scan_runs
from analysis.results.stats import final_results
from toy_models.llama import load_config as toy_config
from toy_models.llama import matrix_shapes, model_names
from toy_models.paths import shipped_data

REFERENCE = shipped_data() / "recordings" / "reference"  # the shipped reference recordings


class MissingData(LookupError):
    """A figure's input is not in the recordings; the message names it and how to record it."""


class RunSet:
    """The runs below ``root``: metrics and vector records as DataFrames, loaded on first use."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.exists():
            raise RecordingError(f"runs directory {self.root} does not exist")
        used, self.skipped = scan_runs(self.root)  # skipped: (directory, reason), reported
        if not used:
            found = "".join(f"; {path}: {reason}" for path, reason in self.skipped)
            raise RecordingError(
                f"no usable run directories under {self.root}{found} (a run has "
                "config.json and metrics.jsonl); train some with `scale-lab reproduce`"
            )

    @cached_property
    def metrics(self) -> pd.DataFrame:
        return load_runs(self.root)

    def bad_row_notes(self) -> list[str]:
        """One line per run with unreadable or non-finite rows: how many, which statistics
        (the figures draw the rest, and mark a non-finite validation loss as a divergence)."""
        notes = self.metrics.attrs.get("bad_rows", {})
        return [f"note: run {run}: {what}" for run, what in sorted(notes.items())]

    @cached_property
    def vectors(self) -> pd.DataFrame:
        return load_runs(self.root, "spectra")

    @cached_property
    def results(self) -> pd.DataFrame:
        return final_results(self.root)

    def side_file(self, name: str) -> dict | None:
        """A JSON file of the root (``tuning.json``, ``reference_losses.json``), or None."""
        return read_json(self.root / name)

    def stat(self, stat: str, per_param: bool = True, labels=None) -> pd.DataFrame:
        frame = self.metrics
        rows = frame[(frame["stat"] == stat) & (frame["param"].notna() == per_param)]
        if labels is not None:
            rows = rows[rows["label"].isin(labels)]
        if rows.empty:
            where = f" for {', '.join(labels)}" if labels is not None else ""
            raise MissingData(f"no {stat!r} rows{where} under {self.root}; {self._absent_reason()}")
        return rows

    def _absent_reason(self) -> str:
        """Why a per-layer statistic is missing: no instrumentation, or instrumented runs whose
        batches could not give it."""
        runs = self.metrics["run"].unique()
        names = [
            r.relative_to(self.root).as_posix() if r != self.root else r.name for r in scan_runs(self.root)[0]
        ]  # as load_runs names them
        empty = [name for name in names if name not in set(runs)]
        if empty:
            return (
                f"the metrics file of {', '.join(empty)} is empty or unreadable: nothing was "
                "recorded there (train it again, or remove it from the root)"
            )
        instrumented = [
            r for r in runs if (self.root / r).is_dir() and run_settings(self.root / r).get("instrument")
        ]
        if not instrumented:
            return (
                "these runs were recorded without instrumentation: record them with it on "
                "(`scale-lab reproduce`, or `train --instrument`)"
            )
        return (
            f"{len(instrumented)} of {len(runs)} runs were instrumented, but their schedule or "
            "batch gave no such rows (gradient variance needs a step of >= 2 sequences; "
            "spectra and row vectors come on their own schedule tiers)"
        )


def spectrum_ranks(rec: RunSet, run: str, param: str, kept: int) -> np.ndarray | None:
    """The 1-based ranks of the ``kept`` singular values recorded for ``param``: the
    instrumentation keeps ``spectra.log_spaced(n)`` of a matrix's ``n = min(rows, fan-in)``
    values, ``n`` from the shape in the run's ``config.json`` (a user's loop records it with
    the roles) or from its named model's config. None when the shape cannot be known or does
    not give ``kept`` values (the figure then says the ranks are unknown)."""
    meta = run_config(rec.root / run)
    shape = meta.get("roles", {}).get(param, {}).get("shape")
    model = meta.get("config", {}).get("model")
    if shape is None and model in model_names():
        shapes = {
            name: s for name, _, s in matrix_shapes(toy_config(model, vocab_size=meta.get("vocab_size")))
        }
        shape = shapes.get(param)
    if shape is None or len(shape) < 2:
        return None
    ranks = np.asarray(log_spaced(min(shape[0], int(np.prod(shape[1:]))))) + 1
    return ranks if len(ranks) == kept else None


def hidden_spectrum(rec: RunSet) -> tuple[str, pd.DataFrame]:
    """The hidden matrix whose update spectra the figures draw (the first by name) and its
    ``update_spectrum`` rows, every run and recorded step."""
    vectors = rec.vectors
    spectra = vectors[(vectors["stat"] == "update_spectrum") & (vectors["role"] == "hidden")]
    if spectra.empty:
        raise MissingData(
            "no `update_spectrum` vectors for hidden matrices; they are recorded on "
            "the `full` schedule with instrumentation on"
        )
    name = sorted(spectra["param"].unique())[0]
    return name, spectra[spectra["param"] == name]
