"""Version 3 of the tuning: chosen on tuning seeds, reported on seeds the tuning never saw.

Per arm, at the reported run length (``HeldOutSweep.wanted`` runs these stages again after
every round, so a later stage's result can reopen an earlier one):

1. **Screen** on the first tuning seed: an lr grid (x ``grid_factor``) around the arm's centre
   at the first beta2 choice, extended at an edge until its best is interior (the budget
   ``max_extensions`` is shared by every lr extension below).
2. **beta2**: each other choice at that lr; its own column extended when it is the better one.
3. **Both tuning seeds near the best**: the best point of each beta2 column, the chosen
   point's neighbours, and every point whose first-seed loss is within the tuning noise of
   the chosen mean run on every tuning seed; the chosen point is the lowest mean over the
   tuning seeds (a diverged seed counts as infinite loss). The tuning noise is the pooled
   std of the pairs of tuning seeds in the arm's grid.
4. **The embedding/output multiplier** (one knob, both roles): steps of x ``mult_factor``
   either side of 1 at the chosen lr and beta2, on the tuning seeds, extended at an edge
   (at most ``max_mult_extensions``): coordinate steps, the lr at multiplier 1, then the
   multiplier at that lr. Every arm, whatever optimizer runs inside it (Muon's AdamW part
   too), tunes the same knob over the same grid.
5. **Held-out seeds**: the chosen point on the arm's reported seeds (``held_out_seeds``,
   never a tuning seed): ``headline_seeds`` of them for the arms the headline claims read,
   ``other_seeds`` for the rest, more where ``extra_seeds`` asks.
6. **Bracketed on means**: the seed noise is the std over the held-out seeds; on each side
   of the chosen lr some point's mean over the tuning seeds must be worse than the chosen
   one's by more than that noise, else that side's points get every tuning seed and then the
   side is extended one point further. An arm still unbracketed when the budget ends is
   named (``tuning.json``'s ``bracketed``, first in the report).

The report reads only the held-out runs (``selection.json``); the tuning runs stay in
``tuning.json`` with every seed's loss.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from analysis.protocol.arms import Arm
from analysis.protocol.presets import Preset
from analysis.training.config import TrainConfig

Key = tuple[float, float, int]  # (beta2, multiplier, lr grid point)


def lr_key(lr: float) -> str:
    """An lr as the sweep names it (3 significant digits)."""
    return f"{lr:.3g}"


def grid_lr(preset: Preset, arm: Arm, k: int) -> float:
    """Grid point ``k`` of an arm: its centre times ``grid_factor ** k``, to 3 digits."""
    return float(lr_key(preset.centers[arm.label] * preset.grid_factor**k))


def point_dir(
    out: Path,
    arm: Arm,
    lr: float,
    seed: int,
    beta2: float | None = None,
    mult: float = 1.0,
    clip: float | None = None,
) -> Path:
    """A point's run directory: ``<arm>/lr<lr>[-b2<beta2>][-m<mult>][-clip<norm>]/seed<k>``; a
    beta2 other than the protocol's first choice, a multiplier other than 1 and a clipping
    norm are named (so a version-2 point keeps its path)."""
    tail = (
        f"lr{lr_key(lr)}"
        + ("" if beta2 is None else f"-b2{beta2:g}")
        + ("" if mult == 1.0 else f"-m{mult:g}")
        + ("" if clip is None else f"-clip{clip:g}")
    )
    return out / arm.label / tail / f"seed{seed}"


def mean(values) -> float:
    """The plain mean (a diverged seed's inf makes it inf: the worst)."""
    return sum(values) / len(values)


def finite_std(losses) -> float:
    """The sample standard deviation of the finite losses (nan with fewer than two)."""
    finite = [x for x in losses if math.isfinite(x)]
    return statistics.stdev(finite) if len(finite) >= 2 else math.nan


@dataclass
class HeldOutSweep:
    """One arm's version-3 sweep: ``runs[(beta2, mult, k)] = {seed: final loss}``."""

    preset: Preset
    arm: Arm
    runs: dict[Key, dict[int, float]] = field(default_factory=dict)
    report_seeds: int = 0  # how many held-out seeds this arm reports
    extensions: int = 0
    mult_extensions: int = 0

    def __post_init__(self):
        p = self.preset
        if not self.runs:
            half = (p.grid_points - 1) // 2
            first = p.beta2_choices[0]
            self.runs = {(first, 1.0, k): {} for k in range(-half, p.grid_points - half)}
        if not self.report_seeds:
            self.report_seeds = p.headline_seeds if self.arm.label in p.headline_arms else p.other_seeds

    # -- reading what is there --------------------------------------------------------------
    def column(self, beta2: float, mult: float = 1.0) -> dict[int, dict[int, float]]:
        """The lr grid at one beta2 and multiplier: ``{k: {seed: loss}}``, by k."""
        return {k: v for (b, m, k), v in sorted(self.runs.items()) if b == beta2 and m == mult}

    def tuning_mean(self, key: Key) -> float | None:
        """The mean over every tuning seed (None until each has run)."""
        losses = self.runs.get(key, {})
        if not all(s in losses for s in self.preset.tune_seeds):
            return None
        return mean([losses[s] for s in self.preset.tune_seeds])

    def _screen_best(self, beta2: float) -> int | None:
        s0 = self.preset.tune_seeds[0]
        scores = {k: v[s0] for k, v in self.column(beta2).items() if s0 in v and math.isfinite(v[s0])}
        return min(scores, key=scores.get) if scores else None

    def tuning_noise(self) -> float:
        """Pooled std of the tuning-seed pairs over the arm's points (nan without one)."""
        a, b = self.preset.tune_seeds[:2]
        pairs = [
            (v[a] - v[b]) ** 2 / 2
            for v in self.runs.values()
            if a in v and b in v and math.isfinite(v[a] - v[b])
        ]
        return math.sqrt(mean(pairs)) if pairs else math.nan

    def chosen_lr(self) -> tuple[float, int] | None:
        """``(beta2, k)`` at multiplier 1 with the lowest mean over the tuning seeds."""
        scored = {
            (b, k): m
            for (b, mult, k) in self.runs
            if mult == 1.0
            for m in [self.tuning_mean((b, mult, k))]
            if m is not None and math.isfinite(m)
        }
        return min(scored, key=scored.get) if scored else None

    def chosen_mult(self) -> float:
        """The multiplier with the lowest mean over the tuning seeds at the chosen lr."""
        chosen = self.chosen_lr()
        if chosen is None:
            return 1.0
        b, k = chosen
        scored = {m: self.tuning_mean((b, m, k)) for (bb, m, kk) in self.runs if bb == b and kk == k}
        scored = {m: s for m, s in scored.items() if s is not None and math.isfinite(s)}
        return min(scored, key=scored.get) if scored else 1.0

    def chosen(self) -> Key | None:
        """The point the arm reports: the chosen lr and beta2 at the chosen multiplier."""
        chosen = self.chosen_lr()
        return None if chosen is None else (chosen[0], self.chosen_mult(), chosen[1])

    def held_out(self) -> list[int]:
        """The seeds this arm reports on (never a tuning seed)."""
        return list(self.preset.held_out_seeds[: self.report_seeds])

    def seed_noise(self) -> float:
        """The std of the final loss over the held-out seeds at the chosen point."""
        key = self.chosen()
        return finite_std(
            [x for s, x in self.runs.get(key, {}).items() if s in self.held_out()] if key else []
        )

    def _side(self, beta2: float, k: int, side: int) -> list[int]:
        """The lr grid points of the column beyond ``k`` on ``side`` (-1, +1), nearest first."""
        return sorted(
            (j for (b, m, j) in self.runs if b == beta2 and m == 1.0 and (j - k) * side > 0),
            key=lambda j: abs(j - k),
        )

    def _side_bracketed(self, beta2: float, k: int, side: int, noise: float) -> bool:
        best = self.tuning_mean((beta2, 1.0, k))
        means = [self.tuning_mean((beta2, 1.0, j)) for j in self._side(beta2, k, side)]
        return any(m is not None and m - best > noise for m in means)

    def bracketed(self) -> bool:
        """Has the chosen lr (at multiplier 1) on each side a point whose mean over the tuning
        seeds is worse than its own by more than the seed noise?"""
        chosen, noise = self.chosen_lr(), self.seed_noise()
        if chosen is None or not math.isfinite(noise):
            return False
        b, k = chosen
        return all(self._side_bracketed(b, k, side, noise) for side in (-1, 1))

    # -- what to run next -------------------------------------------------------------------
    def _missing(self, keys, seeds) -> list[tuple[Key, int]]:
        """The runs of ``keys`` x ``seeds`` not yet done, each once (a point can be asked for
        by two rules of a stage: two workers must never train one run directory)."""
        out = []
        for key in dict.fromkeys(keys):
            self.runs.setdefault(key, {})
            out += [(key, s) for s in dict.fromkeys(seeds) if s not in self.runs[key]]
        return out

    def _extend(self, beta2: float, k: int) -> bool:
        """Add grid point ``k`` of the ``beta2`` column when the lr budget allows it."""
        if (beta2, 1.0, k) in self.runs or self.extensions >= self.preset.max_extensions:
            return False
        self.runs[(beta2, 1.0, k)] = {}
        self.extensions += 1
        return True

    def _edge(self, beta2: float, k: int | None) -> int | None:
        """The grid point beyond ``k`` when ``k`` is at an edge of its column."""
        column = self.column(beta2)
        if k is None:
            return None
        if k == min(column):
            return k - 1
        if k == max(column):
            return k + 1
        return None

    def wanted(self) -> list[tuple[Key, int]]:
        """The runs this arm needs next ([]: done); the stages of the module docstring."""
        p = self.preset
        s0, first = p.tune_seeds[0], p.beta2_choices[0]
        # 1. screen on the first tuning seed
        todo = self._missing([(first, 1.0, k) for k in self.column(first)], [s0])
        if todo:
            return todo
        beyond = self._edge(first, self._screen_best(first))
        if beyond is not None and self._extend(first, beyond):
            return self._missing([(first, 1.0, beyond)], [s0])
        k0 = self._screen_best(first)
        if k0 is None:
            return []  # every point diverged
        # 2. the other beta2 choices at that lr, extended when better
        for b in p.beta2_choices[1:]:
            todo = self._missing([(b, 1.0, k) for k in self.column(b)] or [(b, 1.0, k0)], [s0])
            if todo:
                return todo
            best_b, best_first = self._screen_best(b), self._screen_best(first)
            s0_of = {
                bb: self.runs[(bb, 1.0, kk)][s0]
                for bb, kk in ((b, best_b), (first, best_first))
                if kk is not None
            }
            if best_b is not None and s0_of[b] < s0_of.get(first, math.inf):
                grow = [j for j in (best_b - 1, best_b + 1) if len(self.column(b)) == 1]
                grow = grow or [j for j in [self._edge(b, best_b)] if j is not None]
                added = [j for j in grow if self._extend(b, j)]
                if added:
                    return self._missing([(b, 1.0, j) for j in added], [s0])
        # 3. every tuning seed near the best
        need = [(b, 1.0, k) for b in p.beta2_choices for k in [self._screen_best(b)] if k is not None]
        todo = self._missing(need, p.tune_seeds)
        if todo:
            return todo
        b, k = self.chosen_lr() or (first, k0)
        for j in (k - 1, k + 1):
            if (b, 1.0, j) not in self.runs:
                self._extend(b, j)
        near = [(b, 1.0, j) for j in (k - 1, k + 1) if (b, 1.0, j) in self.runs]
        near += [(bb, 1.0, k) for bb in p.beta2_choices if (bb, 1.0, k) in self.runs]
        best, noise = self.tuning_mean((b, 1.0, k)), self.tuning_noise()
        if math.isfinite(noise):
            near += [(b, 1.0, j) for j, v in self.column(b).items() if s0 in v and v[s0] - best <= noise]
        todo = self._missing(near, p.tune_seeds)
        if todo:
            return todo
        if self.chosen_lr() != (b, k):
            return self.wanted()  # the means moved the choice: its neighbours next
        # 4. the embedding/output multiplier at the chosen lr
        f = p.mult_factor
        tried = sorted(m for (bb, m, kk) in self.runs if bb == b and kk == k)
        todo = self._missing([(b, m, k) for m in sorted({*tried, 1 / f, f})], p.tune_seeds)
        if todo:
            return todo
        m = self.chosen_mult()
        tried = sorted(mm for (bb, mm, kk) in self.runs if bb == b and kk == k)
        if m in (tried[0], tried[-1]) and m != 1.0 and self.mult_extensions < p.max_mult_extensions:
            self.mult_extensions += 1
            nxt = m / f if m == tried[0] else m * f
            return self._missing([(b, nxt, k)], p.tune_seeds)
        # 5. the held-out seeds at the chosen point
        todo = self._missing([(b, m, k)], self.held_out())
        if todo:
            return todo
        # 6. bracketed on means: a side without a point worse beyond the seed noise gets its
        # screened points' tuning seeds, then one point further
        noise = self.seed_noise()
        if not math.isfinite(noise):
            return []
        for side in (-1, 1):
            if self._side_bracketed(b, k, side, noise):
                continue
            points = self._side(b, k, side)
            todo = self._missing([(b, 1.0, j) for j in points], p.tune_seeds)
            if todo:
                return todo
            further = (points[-1] if points else k) + side
            if self._extend(b, further):
                return self._missing([(b, 1.0, further)], p.tune_seeds)
        return []

    # -- configs and records ----------------------------------------------------------------
    def config(self, key: Key, seed: int) -> TrainConfig:
        """The run of point ``key`` on ``seed``."""
        beta2, mult, k = key
        return self.preset.config(self.arm, seed, grid_lr(self.preset, self.arm, k), beta2=beta2, mult=mult)

    def run_dir(self, out: Path, key: Key, seed: int) -> Path:
        """Where that run is recorded under ``out`` (``point_dir``)."""
        beta2, mult, k = key
        first = self.preset.beta2_choices[0]
        return point_dir(
            out, self.arm, grid_lr(self.preset, self.arm, k), seed, None if beta2 == first else beta2, mult
        )

    def reported(self, out: Path) -> list[Path]:
        """The run directories this arm reports: the chosen point on its held-out seeds."""
        key = self.chosen()
        return [] if key is None else [self.run_dir(out, key, s) for s in self.held_out()]

    def summary(self) -> dict:
        """This arm's entry of ``tuning.json``: every point's losses by seed, the choice."""
        p, key = self.preset, self.chosen()
        tuning = list(p.tune_seeds)

        def clean(x):
            return x if math.isfinite(x) else None  # null: diverged

        points = [
            {
                "lr": grid_lr(p, self.arm, k),
                "beta2": b,
                "mult": m,
                "losses": {str(s): clean(x) for s, x in sorted(v.items())},
                "tuning_mean": (lambda t: None if t is None else clean(t))(self.tuning_mean((b, m, k))),
            }
            for (b, m, k), v in sorted(self.runs.items())
            if v
        ]
        held = (
            {}
            if key is None
            else {str(s): clean(self.runs[key][s]) for s in self.held_out() if s in self.runs[key]}
        )
        runs = sum(len(v) for v in self.runs.values())
        first = p.beta2_choices[0]

        def grid(beta2):  # version 2's form, which the report and figures read: tuning seeds
            return {
                lr_key(grid_lr(p, self.arm, k)): [clean(v[s]) for s in tuning if s in v]
                for k, v in self.column(beta2).items()
                if v
            }

        column = [] if key is None else list(self.column(key[0]))
        return {
            "grid": grid(first),
            "beta2_grid": {f"{b:g}": grid(b) for b in p.beta2_choices[1:] if self.column(b)},
            "interior": bool(column) and min(column) < key[2] < max(column),
            "points": points,
            "tune_seeds": tuning,
            "best": None if key is None else grid_lr(p, self.arm, key[2]),
            "beta2": None if key is None else key[0],
            "mult": None if key is None else key[1],
            "held_out": held,
            "seed_noise": clean(self.seed_noise()),
            "tuning_noise": clean(self.tuning_noise()),
            "bracketed": self.bracketed(),
            "lr_extensions": self.extensions,
            "mult_extensions": self.mult_extensions,
            "runs": runs,
            "tokens": runs * p.tokens(),
        }
