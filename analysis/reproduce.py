"""Recreate the paper's bottom-up argument: train the ladder, then write figures and a report.

``scale-lab reproduce --preset quick`` (what ``make reproduce`` runs) trains every arm below
on the bundled corpus with instrumentation on, one run directory per (arm, seed) under
``runs/reproduce/<preset>/<arm>/seed<k>``, then renders every registered figure and writes
``report.md`` (results table with 95% intervals over seeds, and the paper's claims checked).

Arms (the ladder, then baselines): ``sgd``, ``sign``, ``row_norm``, ``col_norm``,
``spectral_norm``, ``scale`` (= col_norm + output momentum), ``col_norm+embedding``,
``col_norm+all``, ``adamw``, ``muon``.

Resumable: an arm whose run directory holds ``result.json`` is skipped; an interrupted one
resumes from its last checkpoint (or restarts if it had none). A run that diverges is
recorded as diverged (``result.json`` says so) and reported, not retried.

Learning rates: each preset carries one peak lr per arm, chosen by ``--sweep`` (a grid around
the recipe default at seed 0, best final validation loss wins). The sweep writes
``lr_sweep.json`` and ``lr_sweep.md`` so the choice can be checked; the quick/cpu-full values
below were set from ``scale-lab reproduce --preset quick --sweep``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from analysis.instrument.schedule import InstrumentConfig
from analysis.recording import load_result
from analysis.results.figures import render_all
from analysis.results.report import write_report
from analysis.train import checkpoint
from analysis.train.config import ConfigError, TrainConfig
from analysis.train.loop import TrainingDiverged, train
from toy_models.corpus import CorpusError


@dataclass(frozen=True)
class Arm:
    """One rung of the ladder: a display label, a recipe and a momentum placement."""

    label: str
    optimizer: str
    momentum: str | None = None
    tie_adam_lr: bool = False   # baselines whose AdamW partition shares the swept lr


ARMS = (Arm("sgd", "sgd"), Arm("sign", "sign"), Arm("row_norm", "row_norm"),
        Arm("col_norm", "col_norm"), Arm("spectral_norm", "spectral_norm"),
        Arm("scale", "scale"), Arm("col_norm+embedding", "col_norm", "embedding"),
        Arm("col_norm+all", "col_norm", "all"), Arm("adamw", "adamw"),
        Arm("muon", "muon", tie_adam_lr=True))
ARM_BY_LABEL = {a.label: a for a in ARMS}


@dataclass(frozen=True)
class Preset:
    """A named protocol: model, steps, batch, seeds, evaluation, lrs per arm and the
    instrumentation schedule; ``config(arm, seed)`` gives one run's ``TrainConfig``."""
    name: str
    description: str
    model: str
    steps: int
    batch_size: int
    micro_batch_size: int
    seq_len: int
    seeds: tuple[int, ...]
    eval_every: int
    eval_tokens: int
    lrs: dict[str, float]
    instrument: InstrumentConfig
    device: str = "auto"
    precision: str = "auto"
    data: str = "bundled"
    save_every: int = 0
    gpu: bool = False
    sweep_factors: tuple[float, ...] = (1 / 3, 1.0, 3.0, 10.0)
    sweep_center: dict[str, float] | None = None   # None: the preset's lrs

    def config(self, arm: Arm, seed: int, lr: float | None = None) -> TrainConfig:
        lr = lr if lr is not None else self.lrs[arm.label]
        return TrainConfig(model=self.model, optimizer=arm.optimizer, momentum=arm.momentum,
                           lr=lr, adam_lr=lr if arm.tie_adam_lr else None,
                           steps=self.steps, batch_size=self.batch_size,
                           micro_batch_size=self.micro_batch_size, seq_len=self.seq_len,
                           eval_every=self.eval_every, eval_tokens=self.eval_tokens, seed=seed,
                           device=self.device, precision=self.precision, data=self.data,
                           save_every=self.save_every, label=arm.label,
                           instrument=self.instrument)


# Where the toy sweep's grid is centred (x 1/3, 1, 3, 10, extended at an edge).
SWEEP_CENTER = {"sgd": 0.5, "sign": 3e-3, "row_norm": 3e-3, "col_norm": 3e-3, "spectral_norm": 3e-3,
                "scale": 3e-3, "col_norm+embedding": 3e-3, "col_norm+all": 3e-3, "adamw": 3e-3,
                "muon": 3e-3}
# Peak learning rates at toy scale: the best of `scale-lab reproduce --preset quick --sweep`
# (data/recordings/cpu-full/lr_sweep.md), every one an interior optimum of its grid. The
# paper's 1e-3 (SCALE, Adam at 60M-350M) is for 1.4B+ tokens; 0.25M-token runs want larger
# steps. cpu-full runs 2.5x longer than the sweep with the same lrs.
TOY_LRS = {"sgd": 0.167, "sign": 3e-3, "row_norm": 3e-3, "col_norm": 3e-3, "spectral_norm": 9e-3,
           "scale": 3e-3, "col_norm+embedding": 3e-3, "col_norm+all": 1e-3, "adamw": 9e-3,
           "muon": 3e-2}
PAPER_LRS = {label: 1e-3 for label in ARM_BY_LABEL} | {"sgd": 0.5}

_TOY_INSTRUMENT = InstrumentConfig(cheap_every=5, dense_until=10, rows_every=25, full_every=10_000,
                                   full_at=(1, 10, 30, 100), topk=16)
PRESETS = {
    "smoke": Preset("smoke", "nano, 12 steps x 8 x 32 tokens, 1 seed; seconds (tests, notebooks)",
                    "nano", 12, 8, 2, 32, (0,), 6, 1024, TOY_LRS,
                    replace(_TOY_INSTRUMENT, cheap_every=2, dense_until=4, rows_every=6,
                            full_at=(1, 6)), device="cpu", precision="fp32"),
    "quick": Preset("quick", "nano (1.1M), 120 steps x 16 x 128 tokens, 1 seed; <= 10 min on 2 cores",
                    "nano", 120, 16, 4, 128, (0,), 40, 16_384, TOY_LRS, _TOY_INSTRUMENT,
                    device="cpu", precision="fp32", sweep_center=SWEEP_CENTER),
    "cpu-full": Preset("cpu-full", "nano (1.1M), 300 steps x 16 x 128 tokens, 3 seeds; about an hour",
                       "nano", 300, 16, 4, 128, (0, 1, 2), 50, 32_768, TOY_LRS,
                       replace(_TOY_INSTRUMENT, cheap_every=10, rows_every=50, full_at=(1, 10, 30, 100, 300)),
                       device="cpu", precision="fp32"),
    # The paper's protocol (arXiv 2506.16659, section 5 of its experiments): batch 512 x 256, lr 1e-3, warmup 10%, cosine to
    # 10%, bf16, C4 with the T5 tokenizer; needs a GPU and a reachable dataset hub.
    "paper-60m": Preset("paper-60m", "60M, 11k steps x 512 x 256 on C4, bf16, 1 seed (GPU)",
                        "60m", 11_000, 512, 64, 256, (42,), 1000, 10_000_000, PAPER_LRS,
                        InstrumentConfig(cheap_every=100, rows_every=1000, full_every=5000,
                                         probe_every=1000),
                        device="cuda", precision="bf16", data="c4", save_every=1000, gpu=True),
    "paper-130m": Preset("paper-130m", "130M, 20k steps x 512 x 256 on C4, bf16, 1 seed (GPU)",
                         "130m", 20_000, 512, 64, 256, (42,), 1000, 10_000_000, PAPER_LRS,
                         InstrumentConfig(cheap_every=100, rows_every=1000, full_every=5000,
                                          probe_every=1000),
                         device="cuda", precision="bf16", data="c4", save_every=1000, gpu=True),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``ConfigError`` listing the choices otherwise)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def select_arms(labels: list[str] | None) -> tuple[Arm, ...]:
    """The arms named by ``labels`` (all when empty); ``ConfigError`` for an unknown one."""
    if not labels:
        return ARMS
    unknown = [label for label in labels if label not in ARM_BY_LABEL]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; choose from {', '.join(ARM_BY_LABEL)}")
    return tuple(ARM_BY_LABEL[label] for label in labels)


def run_one(config: TrainConfig, run_dir: Path, progress: bool) -> dict:
    """Train one (arm, seed) unless finished; return its ``result.json`` contents."""

    done = load_result(run_dir)
    if done is not None:
        return done
    resume = run_dir.exists() and bool(checkpoint.checkpoints(run_dir))
    try:
        train(config, out=run_dir, overwrite=not resume, resume=resume, progress=progress)
    except TrainingDiverged as err:
        print(f"    {err}", flush=True)
    return load_result(run_dir)


def run_preset(preset: Preset, out: Path, arms=ARMS, seeds=None, progress: bool = True,
               lrs: dict[str, float] | None = None) -> list[Path]:
    """Every (arm, seed) of ``preset`` under ``out``; returns their run directories."""
    seeds = tuple(seeds) if seeds is not None else preset.seeds
    jobs = [(arm, seed) for seed in seeds for arm in arms]
    runs = []
    for i, (arm, seed) in enumerate(jobs, 1):
        run_dir = out / arm.label / f"seed{seed}"
        lr = (lrs or {}).get(arm.label)
        config = preset.config(arm, seed, lr)
        print(f"[{i}/{len(jobs)}] {arm.label} seed {seed} lr {config.lr:g} -> {run_dir}", flush=True)
        result = run_one(config, run_dir, progress)
        status = ("diverged at step %d" % result["diverged_at"] if result.get("diverged_at")
                  else f"validation loss {result['final_eval_loss']:.3f}")
        print(f"    {status}", flush=True)
        runs.append(run_dir)
    return runs


def _best_lr(grid: dict[float, float]) -> float | None:
    """The lr with the lowest finite final loss (None when every point diverged)."""
    finite = {lr: loss for lr, loss in grid.items() if math.isfinite(loss)}
    return min(finite, key=finite.get) if finite else None


def sweep(preset: Preset, out: Path, arms=ARMS, progress: bool = False,
          max_extensions: int = 2) -> dict[str, dict]:
    """Seed-0 lr grid per arm: ``preset.sweep_factors`` x the preset's lr; when the best lr is at
    an edge of the grid the grid is extended by x3 in that direction (at most
    ``max_extensions`` times), so a reported best is an interior optimum or says it is not.
    Lowest final validation loss wins; finished points are reused when the sweep is repeated."""

    def point(arm, lr):
        run_dir = out / arm.label / f"lr{lr:g}"
        config = replace(preset.config(arm, preset.seeds[0], lr), instrument=None, eval_every=0)
        print(f"sweep {arm.label} lr {lr:g}", flush=True)
        result = run_one(config, run_dir, progress)
        return math.nan if result.get("diverged_at") else result["final_eval_loss"]

    table = {}
    for arm in arms:
        base = (preset.sweep_center or preset.lrs)[arm.label]
        grid = {lr: point(arm, lr) for lr in sorted({float(f"{base * f:.3g}") for f in preset.sweep_factors})}
        for _ in range(max_extensions):
            best = _best_lr(grid)
            if best is None or min(grid) < best < max(grid):
                break
            lr = float(f"{(best / 3 if best == min(grid) else best * 3):.3g}")
            grid[lr] = point(arm, lr)
            grid = dict(sorted(grid.items()))
        best = _best_lr(grid)
        edge = best is not None and best in (min(grid), max(grid))
        table[arm.label] = {"grid": grid, "best": best, "at_grid_edge": edge}
    (out / "lr_sweep.json").write_text(json.dumps(table, indent=1))
    lines = [f"Learning-rate sweep: preset `{preset.name}`, seed {preset.seeds[0]}, final validation "
             "loss per peak lr (nan: diverged).", "", "| arm | lr: final validation loss | best |",
             "|---|---|---|"]
    for label, row in table.items():
        cells = ", ".join(f"{lr:g}: {loss:.3f}" for lr, loss in row["grid"].items())
        flag = " (grid edge)" if row["at_grid_edge"] else ""
        best = "all diverged" if row["best"] is None else f"{row['best']:g}"
        lines.append(f"| {label} | {cells} | {best}{flag} |")
    (out / "lr_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return table


REFERENCE = Path(__file__).resolve().parents[1] / "data" / "recordings" / "cpu-full"


def recordings(recompute: bool = False, smoke: bool = False, arms=None,
               out: str | Path | None = None) -> Path:
    """The runs a notebook reads: the shipped reference recordings (``cpu-full``, curated), or
    with ``recompute`` fresh ones from the ``smoke`` or ``quick`` preset (resumable)."""
    if not recompute:
        if not REFERENCE.exists():
            raise FileNotFoundError(f"reference recordings not found at {REFERENCE}; they ship with "
                                    "a clone of the repository (or pass recompute=True)")
        return REFERENCE
    preset = PRESETS["smoke" if smoke else "quick"]
    out = Path(out or f"runs/reproduce/{preset.name}")
    run_preset(preset, out, select_arms(arms), progress=not smoke)
    return out


def parser():
    """The argument parser of ``scale-lab reproduce``."""
    p = argparse.ArgumentParser(prog="scale-lab reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default quick)")
    p.add_argument("--out", default=None,
                   help="runs root (default runs/reproduce/<preset>, or <preset>-sweep with --sweep)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    p.add_argument("--arms", nargs="+", default=None, help=f"subset of: {' '.join(ARM_BY_LABEL)}")
    p.add_argument("--sweep", action="store_true", help="run the lr sweep instead (seed 0, no figures)")
    p.add_argument("--figures", default=None, help="figure directory (default <out>/figures)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list", action="store_true", help="list presets and arms")
    return p


def main(argv: list[str] | None = None) -> int:
    """``scale-lab reproduce``: train the preset's arms, then the report and the figures; 0 on
    success, 2 with one error line."""
    args = parser().parse_args(argv)
    if args.list:
        for preset in PRESETS.values():
            print(f"{preset.name:<11} {preset.description}")
        print("arms:", " ".join(ARM_BY_LABEL))
        return 0
    try:
        preset = get_preset(args.preset)
        arms = select_arms(args.arms)
        if preset.gpu:
            if not torch.cuda.is_available():
                raise ConfigError(f"preset {preset.name!r} follows the paper's GPU protocol and "
                                  "needs CUDA; use --preset quick or cpu-full on this machine")
        default = f"runs/reproduce/{preset.name}" + ("-sweep" if args.sweep else "")
        out = Path(args.out or default)
        out.mkdir(parents=True, exist_ok=True)
        if args.sweep:
            sweep(preset, out, arms, progress=not args.no_progress)
            return 0
        run_preset(preset, out, arms, args.seeds, progress=not args.no_progress)
    except (ConfigError, CorpusError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    figures_dir = Path(args.figures or out / "figures")
    report = write_report(out, out / "report.md", figures_dir=figures_dir)
    made, problems = render_all(out, figures_dir)
    for problem in problems:
        print(f"figure skipped: {problem}", file=sys.stderr)
    print(f"{len(made) // 2} figures (PNG and PDF) in {figures_dir}; report in {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
