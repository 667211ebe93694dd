"""A root of recordings (a sweep, a preset's output, the shipped reference): the run directories
at or below it that readers use, the ones they skip with the reason, and all of them read as one
DataFrame. A root with ``selection.json`` (a tuned preset) is read through the runs it lists;
a run directory's own files are ``analysis.recording``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.recording import (
    CONFIG,
    METRICS,
    ORDER,
    RESULT,
    SELECTION,
    TUNING,
    RecordingError,
    load_run,
    read_json,
    table_path,
)

if TYPE_CHECKING:  # pandas takes most of a second to import: only the readers need it
    import pandas as pd


def _unreadable(run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot be read as a run (None when it can)."""
    if not (run_dir / CONFIG).exists():
        return f"no {CONFIG}"
    try:
        json.loads((run_dir / CONFIG).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{CONFIG} unreadable ({type(err).__name__})"
    if not table_path(run_dir, METRICS).exists():
        return f"no {METRICS}"
    return None


def scan_runs(root: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(used, skipped)``: the run directories at or below ``root`` that readers use, sorted,
    and every other directory that looks like a run (holds a config, metrics or result file),
    each with the reason it is not used. When ``root`` holds ``selection.json`` (a tuned
    preset), only the runs it lists are used; the sweep's other points are skipped as such."""
    root = Path(root)
    names = (CONFIG, METRICS, METRICS + ".gz", RESULT)
    found = {root} if any((root / n).exists() for n in names) else set()
    found |= {p.parent for n in names for p in root.glob("**/" + n)}
    selection = read_json(root / SELECTION)
    listed = None if selection is None else {root / rel for rel in selection["runs"]}
    if listed is not None:
        found |= listed
    used, skipped = [], []
    for run_dir in sorted(found):
        reason = _unreadable(run_dir)
        if reason is None and listed is not None and run_dir not in listed:
            inside = run_dir.relative_to(root).parts
            reason = (
                f"a run of a ladder-order setting ({ORDER}/<setting>/{TUNING} keeps its loss)"
                if inside and inside[0] == ORDER
                else f"a sweep point, not reported ({TUNING} keeps its loss)"
            )
        if reason is None:
            used.append(run_dir)
        else:
            skipped.append((run_dir, reason))
    return used, skipped


def find_runs(root: str | Path) -> list[Path]:
    """The run directories at or below ``root`` that readers use (``scan_runs``)."""
    return scan_runs(root)[0]


def load_runs(root: str | Path, table: str = "metrics") -> pd.DataFrame:
    """Every run below ``root`` (a sweep) concatenated into one DataFrame."""
    import pandas as pd

    runs = find_runs(root)
    if not runs:
        raise RecordingError(
            f"no run directories under {root} (a run has {CONFIG} and {METRICS}); "
            "train some with `scale-lab train` or `scale-lab reproduce`"
        )
    # runs are named by their path below root (``scale/seed0``), unique within a sweep
    root = Path(root)
    names = [r.relative_to(root).as_posix() if r != root else r.name for r in runs]
    frames = [load_run(r, table, n) for r, n in zip(runs, names)]
    bad = {k: v for f in frames for k, v in f.attrs["bad_rows"].items() if v}
    for f in frames:
        f.attrs = {}  # concat keeps attrs only when all agree
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs["bad_rows"] = bad  # {run: what was bad}, for the readers to say
    return frame


def chosen_grid(tuning: dict, row: dict) -> dict[str, list]:
    """An arm's lr grid (``{lr: [loss per tuning seed]}``) at the beta2 it chose: ``tuning.json``
    keeps the protocol's first beta2 choice as ``grid`` and the others in ``beta2_grid``."""
    first = tuning.get("beta2_choices", [0.999])[0]
    beta2 = row.get("beta2")
    return row["grid"] if beta2 is None or beta2 == first else row["beta2_grid"][f"{beta2:g}"]
