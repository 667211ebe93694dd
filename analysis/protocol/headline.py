"""Running version 3 of the protocol: every arm's sweep, the seeds the headline needs, the rows
beside it.

``run_held_out`` advances every arm's ``HeldOutSweep`` round by round (so the worker processes
stay busy), then:

- **Seeds for the headline**: for each pair the headline claims read (``HEADLINE_PAIRS``), the
  paired std ``s`` of the held-out losses; a non-inferiority margin ``d`` (claim 6's +5%
  perplexity, ln 1.05 = 0.049 nats) is decidable at a true difference of 0 when the interval's
  half-width ``t(0.975, n-1) s / sqrt(n) <= d``. Both arms of a pair get the smallest ``n`` in
  ``headline_seeds .. len(held_out_seeds)`` that meets it (the most when none does).
- **Rows beside the arms** (``selection.json``'s ``rows``, never mixed into an arm): each arm of
  ``clip_sensitivity`` at its tuned point with the other clipping setting; Muon with its AdamW
  part at the AdamW arm's tuned embedding and output lrs (how much of Muon's lead the
  multiplier explains); and, when AdamW's held-out seeds fail the stable-baseline gate
  (``analysis.results.gates``), AdamW at the other beta2 choices, so the report can say
  whether a stable AdamW exists within the protocol's knobs.

``tuning.json`` keeps every point (losses per seed); ``selection.json`` lists the reported
runs (the held-out seeds at each arm's chosen point) and the rows.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

from analysis.protocol.arms import ARM_BY_LABEL
from analysis.protocol.held_out import HeldOutSweep, finite_std, grid_lr, point_dir
from analysis.protocol.presets import Preset
from analysis.recording import (
    SELECTION,
    TUNING,
    RecordingError,
    is_run_dir,
    load_result,
    read_json,
    write_atomic,
)
from analysis.results.gates import MAX_ADAMW_SPREAD


def write_record(path: str | Path, record: dict) -> Path:
    """A root's JSON record (``tuning.json``, ``selection.json``) written whole: a non-finite
    number (which JSON cannot hold) is refused as ``RecordingError`` naming the file; the
    writers state "none" as null themselves."""
    try:
        text = json.dumps(record, indent=1, allow_nan=False)
    except ValueError:
        raise RecordingError(
            f"refusing to write {path}: it holds a non-finite number (NaN or "
            "infinity), which JSON cannot hold; the earlier file is kept"
        ) from None
    return write_atomic(path, text + "\n")


NON_INFERIORITY_NATS = math.log(1.05)
HEADLINE_PAIRS = (
    ("scale", "adamw"),
    ("scale", "muon"),
    ("col_norm", "scale"),
    ("col_norm", "adamw"),
    ("scale", "col_norm+all"),
)


def seeds_to_decide(diffs: list[float], least: int, most: int, margin: float = NON_INFERIORITY_NATS) -> int:
    """The fewest seeds (``least`` .. ``most``) whose paired interval's half-width at the
    measured std of ``diffs`` is within ``margin`` (``most`` when none is)."""
    from scipy import stats

    if len(diffs) < 2:
        return least
    s = statistics.stdev(diffs)
    for n in range(least, most + 1):
        if stats.t.ppf(0.975, n - 1) * s / math.sqrt(n) <= margin:
            return n
    return most


def _held_losses(sweep: HeldOutSweep) -> dict[int, float]:
    key = sweep.chosen()
    return {} if key is None else {s: x for s, x in sweep.runs.get(key, {}).items() if s in sweep.held_out()}


def _more_seeds(sweeps: dict[str, HeldOutSweep], preset: Preset) -> bool:
    """Raise the headline arms' seed counts where a pair needs it; whether any rose."""
    raised = False
    for a, b in HEADLINE_PAIRS:
        if a not in sweeps or b not in sweeps:
            continue
        la, lb = _held_losses(sweeps[a]), _held_losses(sweeps[b])
        diffs = [la[s] - lb[s] for s in la if s in lb and math.isfinite(la[s] - lb[s])]
        n = seeds_to_decide(diffs, preset.headline_seeds, len(preset.held_out_seeds))
        for label in (a, b):
            if n > sweeps[label].report_seeds:
                sweeps[label].report_seeds, raised = n, True
    return raised


def _advance(sweeps: dict[str, HeldOutSweep], out: Path, runner) -> None:
    while True:
        batch = [(sweep, point) for sweep in sweeps.values() for point in sweep.wanted()]
        if not batch:
            return
        results = runner.run([(sweep.config(*point), sweep.run_dir(out, *point)) for sweep, point in batch])
        for (sweep, (key, seed)), result in zip(batch, results):
            sweep.runs[key][seed] = final_loss(result)


def final_loss(result: dict | None) -> float:
    """A run's final validation loss; inf when it diverged (a diverged run is the worst)."""
    if not result or result.get("diverged_at") or result.get("final_eval_loss") is None:
        return math.inf
    return float(result["final_eval_loss"])


def adamw_stable(sweeps: dict[str, HeldOutSweep]) -> bool | None:
    """The stable-baseline gate on the held-out seeds: AdamW's std at most
    ``MAX_ADAMW_SPREAD`` times the other arms' median (None: not enough runs)."""
    if "adamw" not in sweeps:
        return None
    spread = finite_std(_held_losses(sweeps["adamw"]).values())
    others = [finite_std(_held_losses(s).values()) for label, s in sweeps.items() if label != "adamw"]
    others = [x for x in others if math.isfinite(x)]
    if not others or not math.isfinite(spread):
        return None
    return spread <= MAX_ADAMW_SPREAD * statistics.median(others)


def _side_rows(preset: Preset, sweeps: dict[str, HeldOutSweep], out: Path) -> list[tuple]:
    """The rows beside the arms: ``(name, config, run_dir)`` for every seed of each."""
    rows = []

    def row(name, label, seeds, lr, beta2, mult, clip=None):
        arm, first = ARM_BY_LABEL[label], preset.beta2_choices[0]
        for seed in seeds:
            rows.append(
                (
                    name,
                    preset.config(arm, seed, lr, beta2, mult, clip, label=name),
                    point_dir(out, arm, lr, seed, None if beta2 == first else beta2, mult, clip),
                )
            )

    def point(label):
        sweep = sweeps.get(label)
        key = sweep.chosen() if sweep else None
        return None if key is None else (sweep, grid_lr(preset, sweep.arm, key[2]), key[0], key[1])

    if preset.clip_sensitivity:
        labels, clip = preset.clip_sensitivity
        for label in labels:
            if (found := point(label)) is not None:
                sweep, lr, beta2, mult = found
                row(f"{label}+clip{clip:g}", label, sweep.held_out(), lr, beta2, mult, clip)
    muon, adamw = point("muon"), point("adamw")
    if muon is not None and adamw is not None:
        sweep, lr, beta2, _ = muon
        mult = float(f"{adamw[1] * adamw[3] / lr:.3g}")  # AdamW's embedding/output lr
        row("muon@adamw-lrs", "muon", sweep.held_out(), lr, beta2, mult)
    if adamw is not None and adamw_stable(sweeps) is False:
        sweep, lr, beta2, mult = adamw
        for other in preset.beta2_choices:
            if other != beta2:
                row(f"adamw+b2{other:g}", "adamw", sweep.held_out(), lr, other, mult)
    return rows


def run_held_out(preset: Preset, out: Path, arms, runner) -> list[Path]:
    """Version 3's main setting under ``out`` (module docstring); the reported run dirs."""
    sweeps = {arm.label: HeldOutSweep(preset, arm) for arm in arms}
    _advance(sweeps, out, runner)
    while _more_seeds(sweeps, preset):
        _advance(sweeps, out, runner)
    retrained = _retrain_cached(sweeps, out, runner)
    rows = _side_rows(preset, sweeps, out)
    runner.run([(config, d) for _, config, d in rows])
    _write(preset, sweeps, out, rows, retrained)
    return [d for sweep in sweeps.values() for d in sweep.reported(out)]


def _retrain_cached(sweeps: dict[str, HeldOutSweep], out: Path, runner) -> dict:
    """A reported run known only by its result (a carried sweep cache) is trained again for its
    recordings; ``{run: {"cached": loss, "trained": loss}}`` for each, so the report can say
    whether the two agree (on one machine and thread count a run is bitwise reproducible)."""
    again = []
    for sweep in sweeps.values():
        key = sweep.chosen()
        for seed in sweep.held_out() if key else []:
            run_dir = sweep.run_dir(out, key, seed)
            if load_result(run_dir) is not None and not is_run_dir(run_dir):
                again.append((sweep.config(key, seed), run_dir, final_loss(load_result(run_dir))))
                shutil.rmtree(run_dir)
    results = runner.run([(config, d) for config, d, _ in again])
    return {
        d.relative_to(out).as_posix(): {"cached": cached, "trained": final_loss(result)}
        for (_, d, cached), result in zip(again, results)
    }


def _write(preset: Preset, sweeps: dict[str, HeldOutSweep], out: Path, rows, retrained: dict) -> None:
    """``tuning.json`` and ``selection.json`` (arms tuned by another call kept)."""
    table = {
        "preset": preset.name,
        "protocol": preset.version,
        "model": preset.model,
        "steps": preset.steps,
        "tokens_per_run": preset.tokens(),
        "tune_seeds": list(preset.tune_seeds),
        "held_out_seeds": list(preset.held_out_seeds),
        "grid_factor": preset.grid_factor,
        "mult_factor": preset.mult_factor,
        "beta2_choices": list(preset.beta2_choices),
        "grad_clip": preset.grad_clip,
        "adamw_stable": adamw_stable(sweeps),
        "arms": {label: sweep.summary() for label, sweep in sweeps.items()},
    }
    earlier = read_json(out / TUNING) or {"arms": {}}
    if earlier.get("protocol") == preset.version:
        table["arms"] = {k: v for k, v in earlier["arms"].items() if k not in table["arms"]} | table["arms"]
    write_record(out / TUNING, table)
    listed = (
        (read_json(out / SELECTION) or {"runs": []})
        if earlier.get("protocol") == preset.version
        else {"runs": []}
    )
    runs = [r for r in listed["runs"] if r.split("/")[0] not in sweeps]
    runs += [d.relative_to(out).as_posix() for s in sweeps.values() for d in s.reported(out)]
    named = {}
    for name, _, d in rows:
        named.setdefault(name, []).append(d.relative_to(out).as_posix())
    write_record(
        out / SELECTION,
        {
            "runs": sorted(runs),
            "rows": {**listed.get("rows", {}), **named},
            "retrained": {**listed.get("retrained", {}), **retrained},
        },
    )
