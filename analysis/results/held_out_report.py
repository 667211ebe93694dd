"""The parts of a report that version 3 of the protocol adds (a root whose ``tuning.json`` says
``"protocol": 3``; ``analysis.protocol.held_out``): which seeds tuned and which reported, the
arms not bracketed and those whose multiplier sits at its grid's edge (named first), each arm's tuned point (lr, beta2, embedding/output
multiplier), the rows beside the arms (clipping sensitivity, Muon with AdamW's embedding and
output lr: how much of Muon's lead the multiplier explains) and every reported run that was
trained twice with both values.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.recording import SELECTION, TUNING, read_json
from analysis.results.stats import final_results, fmt, paired

# same machine and thread count: a run is bitwise reproducible (the determinism tests)
RETRAIN_TOLERANCE = 0.0


def is_version_3(root: Path) -> bool:
    """Was ``root`` tuned under version 3 (held-out seeds)?"""
    return (read_json(Path(root) / TUNING) or {}).get("protocol") == 3


def seed_lines(root: Path, results: pd.DataFrame) -> list[str]:
    """The report's first lines under version 3: tuning and reported seeds (checked apart),
    and every arm that is not bracketed on means, by name."""
    tuning = read_json(Path(root) / TUNING)
    tune = set(tuning["tune_seeds"])
    reported = sorted({int(s) for s in results["seed"]})
    overlap = sorted(tune & set(reported))
    counts = results.groupby("label")["seed"].nunique()
    lines = [
        f"**Seeds**: tuned on {', '.join(map(str, sorted(tune)))} (means); reported on "
        f"held-out seeds {reported[0]}-{reported[-1]} ("
        + ", ".join(f"{label} {n}" for label, n in counts.items())
        + ")"
        + (
            "; no reported seed tuned anything."
            if not overlap
            else f"; WARNING: seeds {overlap} both tuned and report."
        ),
        "",
    ]
    loose = [label for label, row in tuning["arms"].items() if not row.get("bracketed")]
    if loose:
        lines += [
            f"**Not bracketed on means** (an optimum that may lie beyond the grid; every claim "
            f"that reads these arms inherits it): {', '.join(loose)}.",
            "",
        ]
    edge = mult_at_edge(tuning)
    if edge:
        lines += [
            "**Multiplier at its grid's edge** (the best embedding/output multiplier is the "
            "largest or smallest tried at the chosen lr, after the protocol's extensions: a "
            "further step might still help, and every claim that reads these arms inherits it): "
            + ", ".join(f"{label} x{m:g}" for label, m in edge.items())
            + ".",
            "",
        ]
    return lines


def mult_at_edge(tuning: dict) -> dict[str, float]:
    """``{arm: multiplier}`` for each arm whose chosen embedding/output multiplier (not 1) is
    the largest or the smallest it tried at its chosen lr and beta2 (``tuning.json``'s points)."""
    edge = {}
    for label, row in tuning["arms"].items():
        m = row.get("mult")
        if m is None or m == 1.0:
            continue
        tried = {
            p["mult"] for p in row.get("points", []) if p["lr"] == row["best"] and p["beta2"] == row["beta2"]
        }
        if tried and m in (min(tried), max(tried)):
            edge[label] = m
    return edge


def tuned_points_table(root: Path) -> list[str]:
    """Each arm's chosen lr, beta2 and embedding/output multiplier, its budget and noise."""
    tuning = read_json(Path(root) / TUNING)
    lines = [
        "| arm | lr | beta2 | emb/out multiplier | tuning runs | seed noise (held-out) | bracketed |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in tuning["arms"].items():
        noise = row.get("seed_noise")
        lines.append(
            f"| {label} | {row['best']:g} | {row['beta2']:g} | x{row['mult']:g} | {row['runs']} | "
            f"{'n/a' if noise is None or not math.isfinite(noise) else f'{noise:.4f}'} | "
            f"{'yes' if row.get('bracketed') else 'NO'} |"
        )
    return lines


def row_lines(root: Path, results: pd.DataFrame) -> list[str]:
    """The rows beside the arms, each paired by seed with its arm, and Muon's lead explained."""
    rows = (read_json(Path(root) / SELECTION) or {}).get("rows", {})
    if not rows:
        return []
    frames = [results]
    for name, runs in rows.items():
        found = [Path(root) / r for r in runs if (Path(root) / r / "result.json").exists()]
        if found:
            part = final_results_of(found)
            part["label"] = name
            frames.append(part)
    frame = pd.concat(frames, ignore_index=True)
    lines = [
        "## Beside the arms",
        "",
        "Each row paired by seed with its own arm (loss difference, nats; 95% interval):",
        "",
    ]
    for name in rows:
        arm = name.split("+")[0].split("@")[0]
        diff, half, n = paired(frame, name, arm)
        if n:
            lines.append(f"- {name} - {arm}: {fmt(diff, half)} over {n} seeds")
    lead, lead_half, n = paired(frame, "muon", "adamw")
    same, same_half, m = paired(frame, "muon@adamw-lrs", "adamw")
    if n and m:
        share = 1 - same / lead if lead else math.nan
        lines += [
            "",
            f"Muon's lead over AdamW: {fmt(lead, lead_half)} nats; with its AdamW part at "
            f"AdamW's tuned embedding/output lr: {fmt(same, same_half)}; the multiplier explains "
            f"{100 * share:.0f}% of the lead."
            if math.isfinite(share)
            else "",
        ]
    return lines + [""]


def final_results_of(runs: list[Path]) -> pd.DataFrame:
    """``final_results`` of a list of run directories (each read as its own root)."""
    return pd.concat([final_results(run) for run in runs], ignore_index=True)


def retrained_lines(root: Path) -> list[str]:
    """Every reported run trained a second time (its first record carried as a cache), with
    both values; a difference beyond ``RETRAIN_TOLERANCE`` is named, not hidden."""
    retrained = (read_json(Path(root) / SELECTION) or {}).get("retrained", {})
    apart = {run: v for run, v in retrained.items() if abs(v["cached"] - v["trained"]) > RETRAIN_TOLERANCE}
    if not retrained:
        return []
    return [
        f"Trained twice (a cached result, then again for the recordings): {len(retrained)} "
        f"runs; {len(apart)} differ: "
        + (
            "; ".join(f"{run} {v['cached']:.4f} then {v['trained']:.4f}" for run, v in apart.items())
            or "none"
        )
        + ". On one machine and thread count a run is bitwise reproducible; "
        "across CPUs the kernels' rounding differs (the records name the CPU).",
        "",
    ]
