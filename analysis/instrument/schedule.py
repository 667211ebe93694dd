"""When each statistic is recorded: the instrumentation's schedule, owned by the run config.

Three tiers, counted in optimizer steps (not backward calls):

- ``cheap``: norms, per-layer gradient variance across micro-batches, per-unit norm summaries,
  update/weight ratios, cosines. Every step for the first ``dense_until`` steps, then every
  ``cheap_every`` steps.
- ``rows``: full per-row vectors (output-layer row RMS against token frequency) and top-k
  singular values (``svd_lowrank``), every ``rows_every`` steps.
- ``full``: every singular value of every matrix, every ``full_every`` steps, at the
  log-spaced early steps ``full_at``, and at the last step.

The paper's probe (K small batches against one large batch on a separate data stream) runs
at ``probe_at`` steps and every ``probe_every`` steps (0: never).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstrumentConfig:
    """The recording schedule (tiers in the module docstring) and the probe's batch sizes."""

    cheap_every: int = 10
    dense_until: int = 20
    rows_every: int = 100
    full_every: int = 1000
    full_at: tuple[int, ...] = (1, 10, 30, 100, 300)
    topk: int = 16
    probe_every: int = 0
    probe_at: tuple[int, ...] = ()
    probe_small: int = 32  # sequences per small batch (paper: 32)
    probe_large: int = 512  # sequences in the large reference batch (paper: 512)
    probe_repeats: int = 8  # K small batches per probe
    every_step: bool = False  # record every tier at every step (for the overhead benchmark)
    per_head: bool = False  # attention matrices also per head (analysis.instrument.heads)

    def __post_init__(self):
        for name in ("cheap_every", "rows_every", "full_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"instrument {name} must be >= 1, got {getattr(self, name)}")
        if self.probe_small < 2 or self.probe_large <= self.probe_small:
            raise ValueError("instrument probe needs 2 <= probe_small < probe_large")
        object.__setattr__(self, "full_at", tuple(self.full_at))
        object.__setattr__(self, "probe_at", tuple(self.probe_at))

    def due(self, tier: str, step: int, last_step: int) -> bool:
        """Is ``tier`` (cheap | rows | full | probe) recorded at optimizer step ``step`` (1-based)?"""
        if self.every_step and tier != "probe":
            return True
        if tier == "cheap":
            return step <= self.dense_until or step % self.cheap_every == 0 or step == last_step
        if tier == "rows":
            return step % self.rows_every == 0 or step == last_step
        if tier == "full":
            return step % self.full_every == 0 or step in self.full_at or step == last_step
        if tier == "probe":
            return step in self.probe_at or (self.probe_every > 0 and step % self.probe_every == 0)
        raise ValueError(f"unknown schedule tier {tier!r}")
