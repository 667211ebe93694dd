"""Instrumentation: hooks that record per-layer gradient variance, per-unit norm statistics and
update spectra on a schedule (``hooks``, ``estimators``, ``spectra``, ``schedule``)."""

from analysis.instrument.hooks import Instrumentation
from analysis.instrument.schedule import InstrumentConfig

__all__ = ["InstrumentConfig", "Instrumentation"]
