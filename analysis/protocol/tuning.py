"""Running a preset: jobs in parallel worker processes, lr tuning by rounds, the selection.

Tuning (``tune``), per arm, at the preset's reported run length: a grid of ``grid_points``
lrs spaced by ``grid_factor`` (x sqrt(3)) around the arm's centre, each run on every tuning
seed; the best lr is the lowest mean final validation loss over those seeds (a seed that
diverged counts as infinite loss); while the best is at an edge of the grid, one more point
is added beyond it (at most ``max_extensions``), so a reported best is an interior optimum
or ``tuning.json`` says it is not. All arms advance together, round by round, so the worker
processes stay busy. ``tuning.json`` keeps every point's losses and each arm's budget (runs
and tokens); ``selection.json`` lists the runs reported (the best lr's, on every seed of the
preset), which every reader of the root (``analysis.recording.find_runs``) then uses.

Runs are resumable: a finished run (``result.json``) is reused, an interrupted one resumes from
its checkpoint. Worker processes use one thread each: two single-threaded runs side by side
train about 1.2x faster than one run on two threads on small models.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from analysis.protocol.presets import Arm, Preset, tuned_lrs
from analysis.recording import ORDER, SELECTION, TUNING, load_result, read_json
from analysis.results.paper import NORMALIZATIONS
from analysis.train import checkpoint
from analysis.train.config import TrainConfig
from analysis.train.loop import TrainingDiverged, train


def run_one(config: TrainConfig, run_dir: Path, progress: bool = False) -> dict:
    """Train one run unless finished; return its ``result.json`` contents."""
    done = load_result(run_dir)
    if done is not None:
        return done
    resume = run_dir.exists() and bool(checkpoint.checkpoints(run_dir))
    try:
        train(config, out=run_dir, overwrite=not resume, resume=resume, progress=progress)
    except TrainingDiverged as err:
        print(f"    {err}", flush=True)
    return load_result(run_dir)


def _worker_init():
    torch.set_num_threads(1)


def _job(config_dict: dict, run_dir: str) -> dict:
    return run_one(TrainConfig.from_dict(config_dict), Path(run_dir))


def final_loss(result: dict) -> float:
    """A run's final validation loss; inf when it diverged (a diverged run is the worst)."""
    if result.get("diverged_at") or result.get("final_eval_loss") is None:
        return math.inf
    return float(result["final_eval_loss"])


@dataclass
class Runner:
    """Runs batches of ``(config, run_dir)`` jobs, ``jobs`` at a time (1: in this process)."""

    jobs: int = 1
    progress: bool = False

    def run(self, batch: list[tuple[TrainConfig, Path]]) -> list[dict]:
        todo = [(c, d) for c, d in batch if load_result(d) is None]
        for config, run_dir in todo:
            print(f"run {config.label} lr {config.lr:g} seed {config.seed} -> {run_dir}", flush=True)
        if self.jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(min(self.jobs, len(todo)), mp_context=get_context("spawn"),
                                     initializer=_worker_init) as pool:
                list(pool.map(_job, [c.to_dict() for c, _ in todo], [str(d) for _, d in todo]))
        else:
            for config, run_dir in todo:
                run_one(config, run_dir, self.progress)
        return [load_result(d) for _, d in batch]


def _lr_key(lr: float) -> str:
    return f"{lr:.3g}"


def _point_dir(out: Path, arm: Arm, lr: float, seed: int) -> Path:
    return out / arm.label / f"lr{_lr_key(lr)}" / f"seed{seed}"


def _lr(preset: Preset, arm: Arm, k: int) -> float:
    """Grid point ``k`` of an arm: its centre times ``grid_factor ** k``, to 3 digits."""
    return float(_lr_key(preset.centers[arm.label] * preset.grid_factor ** k))


def _best(grid: dict[int, list[float]]) -> int | None:
    """The grid point with the lowest mean loss over seeds (None when every one diverged)."""
    means = {k: sum(losses) / len(losses) for k, losses in grid.items()}
    finite = {k: m for k, m in means.items() if math.isfinite(m)}
    return min(finite, key=finite.get) if finite else None


def tune(preset: Preset, out: Path, arms, runner: Runner) -> dict:
    """Sweep each arm's lr (module docstring); write and return ``tuning.json``'s contents."""
    seeds = preset.tune_seeds
    half = (preset.grid_points - 1) // 2
    # grid point k -> {seed: loss}, None until run
    grids = {arm.label: {k: None for k in range(-half, preset.grid_points - half)} for arm in arms}
    extensions = {arm.label: 0 for arm in arms}
    while True:
        batch = [(arm, k, seed) for arm in arms for k, losses in grids[arm.label].items()
                 if losses is None for seed in seeds]
        if not batch:
            break
        results = runner.run([(preset.config(arm, seed, _lr(preset, arm, k)),
                               _point_dir(out, arm, _lr(preset, arm, k), seed)) for arm, k, seed in batch])
        for (arm, k, seed), result in zip(batch, results):
            grids[arm.label][k] = (grids[arm.label][k] or {}) | {seed: final_loss(result)}
        for arm in arms:
            best = _best({k: list(v.values()) for k, v in grids[arm.label].items()})
            lo, hi = min(grids[arm.label]), max(grids[arm.label])
            if best is None or lo < best < hi or extensions[arm.label] >= preset.max_extensions:
                continue
            grids[arm.label][best - 1 if best == lo else best + 1] = None
            grids[arm.label] = dict(sorted(grids[arm.label].items()))
            extensions[arm.label] += 1
    table = {"preset": preset.name, "model": preset.model, "steps": preset.steps,
             "tokens_per_run": preset.tokens(), "tune_seeds": list(seeds),
             "grid_factor": preset.grid_factor, "arms": {}}
    for arm in arms:
        grid = {k: [v[s] for s in seeds] for k, v in grids[arm.label].items()}
        best = _best(grid)
        runs = len(grid) * len(seeds)
        table["arms"][arm.label] = {
            "grid": {_lr_key(_lr(preset, arm, k)): [x if math.isfinite(x) else None for x in losses]
                     for k, losses in grid.items()},   # null: diverged
            "best": None if best is None else _lr(preset, arm, best),
            "interior": best is not None and min(grid) < best < max(grid),
            "runs": runs, "tokens": runs * preset.tokens()}
    earlier = (read_json(out / TUNING) or {"arms": {}})["arms"]
    table["arms"] = {k: v for k, v in earlier.items() if k not in table["arms"]} | table["arms"]
    (out / TUNING).write_text(json.dumps(table, indent=1))   # arms tuned by another call kept
    return table


def run_preset(preset: Preset, out: Path, arms, runner: Runner, seeds=None) -> list[Path]:
    """Every arm of ``preset`` under ``out`` (tuned first when the preset tunes, and then
    ``selection.json`` lists the reported runs among the sweep's); the reported run directories."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = tuple(seeds) if seeds is not None else preset.seeds
    if preset.tune_seeds:
        lrs = {label: row["best"] for label, row in tune(preset, out, arms, runner)["arms"].items()}
    else:
        lrs = preset.fixed_lrs or (dict(preset.centers) | tuned_lrs())
    chosen = [(arm, lrs[arm.label], seed) for seed in seeds for arm in arms
              if lrs.get(arm.label) is not None]
    dirs = ([_point_dir(out, arm, lr, seed) for arm, lr, seed in chosen] if preset.tune_seeds
            else [out / arm.label / f"seed{seed}" for arm, _, seed in chosen])
    results = runner.run([(preset.config(arm, seed, lr), d) for (arm, lr, seed), d in zip(chosen, dirs)])
    for (arm, lr, seed), result in zip(chosen, results):
        loss = final_loss(result)
        status = f"validation loss {loss:.3f}" if math.isfinite(loss) else "diverged"
        print(f"{arm.label} seed {seed} lr {lr:g}: {status}", flush=True)
    if preset.tune_seeds:   # arms reported by another call stay listed
        listed = (read_json(out / SELECTION) or {"runs": []})["runs"]
        mine = {arm.label for arm in arms}
        listed = [r for r in listed if r.split("/")[0] not in mine]
        (out / SELECTION).write_text(json.dumps(
            {"runs": sorted(listed + [d.relative_to(out).as_posix() for d in dirs])}, indent=1))
    ladder = [arm for arm in arms if arm.label in NORMALIZATIONS]
    for name, model, steps in preset.order_settings if ladder else ():
        print(f"ladder order: setting {name} ({model}, {steps} steps)", flush=True)
        tune(preset.setting(model, steps), out / ORDER / name, ladder, runner)
    return dirs


def jobs_default() -> int:
    """Worker processes by default: one per core, at most 2 (each run is single-threaded)."""
    return max(1, min(2, os.cpu_count() or 1))
