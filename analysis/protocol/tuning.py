"""Running a preset: lr tuning by rounds, the settings, the selection.

Tuning (``tune``), per arm, at the preset's reported run length: a grid of ``grid_points``
lrs spaced by ``grid_factor`` (x sqrt(3)) around the arm's centre, each run on every tuning
seed; the best lr is the lowest mean final validation loss over those seeds (a seed that
diverged counts as infinite loss); while the best is at an edge of the grid, one more point
is added beyond it (at most ``max_extensions``), so a reported best is an interior optimum
or ``tuning.json`` says it is not. All arms advance together, round by round, so the worker
processes stay busy. ``tuning.json`` keeps every point's losses and each arm's budget (runs
and tokens); ``selection.json`` lists the runs reported (the best lr's, on every seed of the
preset), which every reader of the root (``analysis.results.root.find_runs``) then uses.

The runs themselves (resumable, in worker processes): ``analysis.protocol.runner``.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from analysis.protocol.arms import Arm, tuned_mults, tuned_points
from analysis.protocol.headline import final_loss, run_held_out, write_record
from analysis.protocol.held_out import finite_std, grid_lr, lr_key, mean, point_dir
from analysis.protocol.presets import Preset
from analysis.protocol.runner import Runner
from analysis.recording import ORDER, SELECTION, TUNING, is_run_dir, load_result, read_json
from analysis.results.paper import NORMALIZATIONS
from analysis.training.config import ConfigError, TrainConfig


def _best(grid: dict[int, list[float]]) -> int | None:
    """The grid point with the lowest mean loss over seeds (None when every one diverged)."""
    means = {k: mean(losses) for k, losses in grid.items() if losses}
    finite = {k: m for k, m in means.items() if math.isfinite(m)}
    return min(finite, key=finite.get) if finite else None


@dataclass
class ArmSweep:
    """One arm's sweep: per beta2 choice, grid point k -> {seed: final loss}. ``wanted`` says
    which runs it needs next, from what it has (the stages of ``tune``'s docstring)."""

    preset: Preset
    arm: Arm
    columns: dict[float, dict[int, dict[int, float]]]
    extensions: int = 0

    def _grid(self, beta2: float) -> dict[int, list[float]]:
        seeds = self.preset.tune_seeds
        return {k: [v[s] for s in seeds if s in v] for k, v in self.columns[beta2].items()}

    def _missing(self, beta2: float, seeds) -> list[tuple[float, int, int]]:
        return [(beta2, k, s) for k, v in self.columns[beta2].items() for s in seeds if s not in v]

    def _extend_if_at_edge(self, beta2: float) -> bool:
        column, best = self.columns[beta2], _best(self._grid(beta2))
        lo, hi = min(column), max(column)
        if best is None or lo < best < hi or self.extensions >= self.preset.max_extensions:
            return False
        column[best - 1 if best == lo else best + 1] = {}
        self.columns[beta2] = dict(sorted(column.items()))
        self.extensions += 1
        return True

    def chosen(self) -> tuple[float, int | None]:
        """The (beta2, grid point) with the lowest mean loss over the tuning seeds."""
        bests = {b: _best(self._grid(b)) for b in self.columns}
        scored = {b: mean(self._grid(b)[k]) for b, k in bests.items() if k is not None}
        if not scored:
            return self.preset.beta2_choices[0], None
        beta2 = min(scored, key=scored.get)
        return beta2, bests[beta2]

    def noise(self) -> float:
        """The seed spread (std) of the final loss at the chosen point over the reported seeds."""
        beta2, k = self.chosen()
        return math.nan if k is None else finite_std(list(self.columns[beta2][k].values()))

    def bracketed(self) -> bool:
        """Has the chosen point a neighbour on each side worse by more than the seed noise?"""
        beta2, k = self.chosen()
        grid, noise = self._grid(beta2), self.noise()
        if k is None or not math.isfinite(noise):
            return False
        best = mean(grid[k])
        return all(j in grid and grid[j] and mean(grid[j]) - best > noise for j in (k - 1, k + 1))

    def wanted(self) -> list[tuple[float, int, int]]:
        """The runs this sweep needs next ([]: done)."""
        p, first = self.preset, self.preset.beta2_choices[0]
        todo = self._missing(first, p.tune_seeds)
        if todo or self._extend_if_at_edge(first):
            return todo or self._missing(first, p.tune_seeds)
        k0 = _best(self._grid(first))
        for beta2 in p.beta2_choices[1:]:  # the other beta2 at the best lr, then its own edge
            column = self.columns.setdefault(beta2, {})
            if k0 is not None and not column:
                column[k0] = {}
            todo = self._missing(beta2, p.tune_seeds)
            if todo:
                return todo
            if self.chosen()[0] == beta2:  # the better choice: its own neighbours, then edges
                if len(column) == 1 and self.extensions < p.max_extensions:
                    (k,) = column
                    column.update({k - 1: {}, k + 1: {}})
                    self.columns[beta2] = dict(sorted(column.items()))
                    self.extensions += 1
                    return self._missing(beta2, p.tune_seeds)
                if self._extend_if_at_edge(beta2):
                    return self._missing(beta2, p.tune_seeds)
        if not p.bracket_beyond_noise:
            return []
        beta2, k = self.chosen()
        if k is None:
            return []
        self.columns[beta2].setdefault(k, {})
        todo = [(beta2, k, s) for s in p.seeds if s not in self.columns[beta2][k]]
        if todo:
            return todo
        grid, noise = self._grid(beta2), self.noise()
        if self.bracketed() or self.extensions >= p.max_extensions or not math.isfinite(noise):
            return []
        best = mean(grid[k])
        for j, beyond in ((k - 1, k - 2), (k + 1, k + 2)):  # a side within the noise: one further
            near = j not in grid or not grid[j] or mean(grid[j]) - best <= noise
            if near and (j not in grid or beyond not in grid):
                self.columns[beta2].setdefault(j, {})
                self.columns[beta2].setdefault(beyond, {})
                self.columns[beta2] = dict(sorted(self.columns[beta2].items()))
                self.extensions += 1
                return self._missing(beta2, p.tune_seeds)
        return []

    def run_dir(self, out: Path, beta2: float, k: int, seed: int) -> Path:
        default = beta2 == self.preset.beta2_choices[0]
        return point_dir(out, self.arm, grid_lr(self.preset, self.arm, k), seed, None if default else beta2)

    def config(self, beta2: float, k: int, seed: int) -> TrainConfig:
        return self.preset.config(self.arm, seed, grid_lr(self.preset, self.arm, k), beta2=beta2)

    def summary(self) -> dict:
        """This arm's entry of ``tuning.json``."""
        p, first = self.preset, self.preset.beta2_choices[0]
        beta2, k = self.chosen()
        runs = sum(len(v) for column in self.columns.values() for v in column.values())
        grid = self._grid(first)
        entry = {
            "grid": {
                lr_key(grid_lr(p, self.arm, j)): [x if math.isfinite(x) else None for x in losses]
                for j, losses in grid.items()
            },  # null: diverged
            "best": None if k is None else grid_lr(p, self.arm, k),
            "interior": k is not None and min(self.columns[beta2]) < k < max(self.columns[beta2]),
            "runs": runs,
            "tokens": runs * p.tokens(),
        }
        if len(p.beta2_choices) > 1:
            entry["beta2"] = beta2
            entry["beta2_grid"] = {
                f"{b:g}": {
                    lr_key(grid_lr(p, self.arm, j)): [x if math.isfinite(x) else None for x in losses]
                    for j, losses in self._grid(b).items()
                }
                for b in self.columns
                if b != first
            }
        if p.bracket_beyond_noise:
            noise = self.noise()
            entry["seed_noise"] = noise if math.isfinite(noise) else None
            entry["bracketed"] = self.bracketed()
        return entry


def tune(preset: Preset, out: Path, arms, runner: Runner) -> dict:
    """Sweep each arm's lr (and beta2), all arms round by round; write and return
    ``tuning.json``'s contents.

    Stages, per arm: (1) a grid of ``grid_points`` lrs around its centre at the first beta2
    choice on the tuning seeds, extended at an edge until the best is interior; (2) each other
    beta2 choice at that best lr, its own column extended at an edge when it is the better one;
    (3) with ``bracket_beyond_noise``: the chosen (lr, beta2) on every reported seed, their
    spread the seed noise, and a side whose neighbour is not worse by more than that noise
    extended one point further. Every stage shares ``max_extensions``."""
    first = preset.beta2_choices[0]
    half = (preset.grid_points - 1) // 2
    sweeps = [
        ArmSweep(preset, arm, {first: {k: {} for k in range(-half, preset.grid_points - half)}})
        for arm in arms
    ]
    while True:
        batch = [(sweep, point) for sweep in sweeps for point in sweep.wanted()]
        if not batch:
            break
        results = runner.run([(sweep.config(*point), sweep.run_dir(out, *point)) for sweep, point in batch])
        for (sweep, (beta2, k, seed)), result in zip(batch, results):
            sweep.columns[beta2][k][seed] = final_loss(result)
    table = {
        "preset": preset.name,
        "model": preset.model,
        "steps": preset.steps,
        "tokens_per_run": preset.tokens(),
        "tune_seeds": list(preset.tune_seeds),
        "grid_factor": preset.grid_factor,
        "beta2_choices": list(preset.beta2_choices),
        "arms": {sweep.arm.label: sweep.summary() for sweep in sweeps},
    }
    earlier = (read_json(out / TUNING) or {"arms": {}})["arms"]
    table["arms"] = {k: v for k, v in earlier.items() if k not in table["arms"]} | table["arms"]
    write_record(out / TUNING, table)  # arms tuned by another call kept
    return table


MAIN = "main"  # the preset's own setting, beside its order_settings' names


def setting_names(preset: Preset) -> list[str]:
    """The settings ``run_preset`` can run: ``main`` and each further setting's name."""
    return [MAIN, *(name for name, *_ in preset.order_settings)]


def run_preset(preset: Preset, out: Path, arms, runner: Runner, seeds=None, settings=None) -> list[Path]:
    """Every arm of ``preset`` under ``out`` (tuned first when the preset tunes, and then
    ``selection.json`` lists the reported runs among the sweep's), then its further settings
    under ``out/order/<name>``; ``settings`` (names from ``setting_names``) runs only those,
    so a preset longer than one sitting can be run setting by setting. The main setting's
    reported run directories (none when it is not run)."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = setting_names(preset) if settings is None else list(settings)
    dirs = _run_main(preset, out, arms, runner, seeds) if MAIN in wanted else []
    for name, model, steps, labels in preset.order_settings:
        chosen = [arm for arm in arms if arm.label in (labels or NORMALIZATIONS)]
        if name in wanted and chosen:
            print(
                f"setting {name} ({model}, {steps} steps): {', '.join(a.label for a in chosen)}", flush=True
            )
            setting = preset.setting(model, steps)
            if preset.centre_settings_on_main:
                setting = replace(setting, centers=main_centres(preset, out, name, chosen))
            rows = tune(setting, out / ORDER / name, chosen, runner)["arms"]
            if setting.bracket_beyond_noise:  # every seed ran: the setting reports them
                _write_selection(out / ORDER / name, setting, chosen, rows)
    return dirs


def main_centres(preset: Preset, out: Path, name: str, arms) -> dict[str, float]:
    """A further setting's grid centres: the main setting's tuned lr of each arm (its
    ``tuning.json`` under ``out``); ``ConfigError`` when the main setting has not tuned one."""
    tuned = {label: lr for label, (lr, _) in tuned_points(out / TUNING).items()}
    missing = [arm.label for arm in arms if arm.label not in tuned]
    if missing:
        raise ConfigError(
            f"setting {name!r} starts each arm's lr grid at the main setting's tuned lr, "
            f"and {out / TUNING} has none for {', '.join(missing)}; run "
            f"--settings {MAIN} first"
        )
    return dict(preset.centers) | {arm.label: tuned[arm.label] for arm in arms}


def _run_main(preset: Preset, out: Path, arms, runner: Runner, seeds) -> list[Path]:
    """The main setting of ``run_preset``."""
    if preset.version == 3:  # tuned on tuning seeds, reported on held-out ones
        return run_held_out(preset, out, arms, runner)
    seeds = tuple(seeds) if seeds is not None else preset.seeds
    first = preset.beta2_choices[0]
    beta2s, mults = {}, {}
    if preset.tune_seeds:
        rows = tune(preset, out, arms, runner)["arms"]
        lrs = {label: row["best"] for label, row in rows.items()}
        beta2s = {label: row.get("beta2", first) for label, row in rows.items()}
    else:
        points = tuned_points()
        lrs = preset.fixed_lrs or (dict(preset.centers) | {k: lr for k, (lr, _) in points.items()})
        if not preset.fixed_lrs:  # the tuning's beta2 and multiplier with its lr
            beta2s = {k: b2 for k, (_, b2) in points.items() if b2 is not None}
            mults = tuned_mults()
    chosen = [(arm, lrs[arm.label], seed) for seed in seeds for arm in arms if lrs.get(arm.label) is not None]
    beta2_of = {arm.label: beta2s.get(arm.label, first) for arm in arms}
    dirs = (
        [
            point_dir(out, arm, lr, seed, None if beta2_of[arm.label] == first else beta2_of[arm.label])
            for arm, lr, seed in chosen
        ]
        if preset.tune_seeds
        else [out / arm.label / f"seed{seed}" for arm, _, seed in chosen]
    )
    for d in dirs:  # a reported run known only by its result (a sweep's cache): train it
        if load_result(d) is not None and not is_run_dir(d):  # again for its recordings
            shutil.rmtree(d)
    results = runner.run(
        [
            (preset.config(arm, seed, lr, beta2=beta2_of[arm.label], mult=mults.get(arm.label, 1.0)), d)
            for (arm, lr, seed), d in zip(chosen, dirs)
        ]
    )
    for (arm, lr, seed), result in zip(chosen, results):
        loss = final_loss(result)
        status = f"validation loss {loss:.3f}" if math.isfinite(loss) else "diverged"
        print(f"{arm.label} seed {seed} lr {lr:g}: {status}", flush=True)
    if preset.tune_seeds:  # arms reported by another call stay listed
        listed = (read_json(out / SELECTION) or {"runs": []})["runs"]
        labels_here = {arm.label for arm in arms}
        listed = [r for r in listed if r.split("/")[0] not in labels_here]
        write_record(
            out / SELECTION, {"runs": sorted(listed + [d.relative_to(out).as_posix() for d in dirs])}
        )
    return dirs


def _write_selection(out: Path, preset: Preset, arms, rows: dict) -> None:
    """``selection.json`` of a tuned root: each arm's chosen (lr, beta2) on every seed."""
    first = preset.beta2_choices[0]
    runs = [
        point_dir(
            out,
            arm,
            rows[arm.label]["best"],
            seed,
            None if rows[arm.label].get("beta2", first) == first else rows[arm.label]["beta2"],
        )
        .relative_to(out)
        .as_posix()
        for arm in arms
        if rows.get(arm.label, {}).get("best") is not None
        for seed in preset.seeds
    ]
    write_record(out / SELECTION, {"runs": sorted(runs)})
