"""Running a sweep's jobs: each ``(config, run_dir)`` trained unless finished, in parallel worker
processes, and a finished sweep carried as its small files.

Runs are resumable: a finished run (``result.json``) is reused, an interrupted one resumes from
its checkpoint. A sweep can be carried as its points' ``config.json``, ``result.json`` and
``segments.jsonl`` alone (``cache_sweep``): tuning reuses them, and a reported run among them is
trained again for its recordings. Worker processes use one thread each: two single-threaded
runs side by side train about 1.2x faster than one run on two threads on small models.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from analysis.recording import CONFIG, RESULT, SEGMENTS, load_result, write_atomic
from analysis.training import checkpoint
from analysis.training.config import TrainConfig
from analysis.training.loop import train
from analysis.training.stopping import TrainingDiverged


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


@dataclass
class Runner:
    """Runs batches of ``(config, run_dir)`` jobs, ``jobs`` at a time (1: in this process)."""

    jobs: int = 1
    progress: bool = False

    def run(self, batch: list[tuple[TrainConfig, Path]]) -> list[dict]:
        """Train every unfinished run of ``batch`` (a directory listed twice trains once);
        the results in ``batch``'s order."""
        todo = list({d: (c, d) for c, d in batch if load_result(d) is None}.values())
        for config, run_dir in todo:
            print(f"run {config.label} lr {config.hyper.lr:g} seed {config.seed} -> {run_dir}", flush=True)
        if self.jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(
                min(self.jobs, len(todo)), mp_context=get_context("spawn"), initializer=_worker_init
            ) as pool:
                list(pool.map(_job, [c.to_dict() for c, _ in todo], [str(d) for _, d in todo]))
        else:
            for config, run_dir in todo:
                run_one(config, run_dir, self.progress)
        return [load_result(d) for _, d in batch]


def jobs_default() -> int:
    """Worker processes by default: one per core, at most 2 (each run is single-threaded)."""
    return max(1, min(2, os.cpu_count() or 1))


def cache_sweep(out: Path, dst: Path) -> int:
    """Copy every finished run's ``config.json``, ``result.json`` and ``segments.jsonl``
    under ``out`` to the same place under ``dst`` (kilobytes a run: what tuning reads), so a
    preset longer than a sitting can continue elsewhere; the runs copied."""
    done = [r.parent for r in sorted(Path(out).glob(f"**/{RESULT}"))]
    for run in done:
        target = Path(dst) / run.relative_to(out)
        target.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG, SEGMENTS):
            if (run / name).exists():
                shutil.copy2(run / name, target / name)
        # the run's directory is where the file is: no absolute path of the machine is carried
        result = {k: v for k, v in load_result(run).items() if k != "run_dir"}
        write_atomic(target / RESULT, json.dumps(result, indent=2) + "\n")
    return len(done)
