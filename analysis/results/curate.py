"""Make the small reference recordings shipped under ``data/recordings`` from full runs.

``python -m analysis.results.curate runs/reproduce/reference data/recordings/reference`` copies every
finished reported run's ``config.json`` and ``result.json`` (of a tuned root, the runs in its
``selection.json``; the sweep's other points are summarized by ``tuning.json``, copied with
the root's other side files; the rows beside the arms that ``selection.json`` lists, run-level
rows only) and writes gzipped, filtered tables:

- ``metrics.jsonl.gz``: run-level rows (loss, lr, tokens/s, eval; not the timings and group
  lrs in ``DROP_RUN_LEVEL``) and the per-parameter statistics in ``KEEP_STATS`` (what the
  figures, the report and the notebooks read), those rounded to 6 significant digits;
- ``spectra.jsonl.gz``: update spectra (64 log-spaced values each), and the vocabulary-sized
  vectors the figures read (token frequency, output-layer gradient row RMS) at their last
  recorded step for the first seed only, since those are 8192 numbers each; vectors are
  rounded to 6 significant digits.

``--scalars-only`` keeps the run-level rows alone and no vectors (a set kept for its losses,
like ``data/recordings/early``); a curated set can be curated again. Checkpoints are not copied. The full recordings stay where they are; re-running
``scale-lab reproduce --preset reference`` and this command regenerates the reference set.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

from analysis.arguments import Parser
from analysis.recording import (
    CONFIG,
    METRICS,
    ORDER,
    REFERENCE_LINES,
    RESULT,
    SEGMENTS,
    SELECTION,
    SPECTRA,
    TUNING,
    RecordingError,
    _read_jsonl,
    load_result,
    read_json,
    run_settings,
    table_path,
)
from analysis.results.root import find_runs

KEEP_STATS = (
    "grad_norm",
    "grad_var",
    "grad_var_rel",
    "grad_var_coord",
    "update_rms",
    "update_weight_ratio",
    "update_row_rms_cv",
    "grad_row_rms_cv",
    "update_stable_rank",
    "update_topk_energy",
    "momentum_grad_cos",
    "probe_var",
    "probe_var_rel",
)
DROP_RUN_LEVEL = ("step_time", "data_time", "tokens", "flops_per_s")  # and every "lr/<group>"
WIDE_VECTORS = ("token_frequency", "grad_row_rms", "grad_var_rows")
KEEP_WIDE = {("token_frequency", "output"), ("grad_row_rms", "output")}


def _write_gz(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as handle:
        for row in rows:
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")


def _kept(row: dict) -> dict | None:
    """A metrics row as shipped (``KEEP_STATS``, ``DROP_RUN_LEVEL``), or None when dropped."""
    if row["param"] is None:
        return None if row["stat"] in DROP_RUN_LEVEL or row["stat"].startswith("lr/") else row
    if row["stat"] not in KEEP_STATS:
        return None
    value = row["value"]
    return row | {"value": float(f"{value:.6g}")} if isinstance(value, float) else row


def curate_run(src: Path, dst: Path, wide: bool, scalars_only: bool = False) -> int:
    """Copy one run's config and result (without the ``run_dir`` an older trainer wrote: a path
    of the machine that trained it) and write its filtered, gzipped tables into ``dst``;
    ``wide`` keeps the vocabulary-sized vectors, ``scalars_only`` the run-level rows alone.
    Returns the bytes written."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG, SEGMENTS):  # segments: the settings each start ran with
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    result = {k: v for k, v in load_result(src).items() if k != "run_dir"}  # a path of the machine
    (dst / RESULT).write_text(json.dumps(result, indent=2) + "\n")
    metrics = [
        r
        for r in map(_kept, _read_jsonl(table_path(src, METRICS)))
        if r is not None and (r["param"] is None or not scalars_only)
    ]
    _write_gz(dst / (METRICS + ".gz"), metrics)
    vectors = [] if scalars_only else _read_jsonl(table_path(src, SPECTRA))
    keep = [r for r in vectors if r["stat"] not in WIDE_VECTORS]
    if wide:
        last = {}
        for r in vectors:
            if (r["stat"], r["role"]) in KEEP_WIDE:
                last[(r["param"], r["stat"])] = r  # later steps overwrite earlier ones
        keep += list(last.values())
    for r in keep:  # float32 precision is plenty for plotting and halves the size
        r["values"] = [float(f"{v:.6g}") if v is not None else None for v in r["values"]]
    if keep:
        _write_gz(dst / (SPECTRA + ".gz"), keep)
    return sum(p.stat().st_size for p in dst.iterdir())


def curate(src: str | Path, dst: str | Path, scalars_only: bool = False) -> int:
    """Curate every finished run under ``src`` into ``dst`` (same relative layout); total bytes.

    A further tuned setting (``order/<name>``) ships its ``tuning.json`` and, when it has a
    ``selection.json``, its reported runs (their final losses on every seed: the claims at
    that setting pair them by seed); a setting not run yet leaves what ``dst`` holds of it."""
    src, dst = Path(src), Path(dst)
    runs = [
        r for r in find_runs(src) if load_result(r) is not None and r.relative_to(src).parts[:1] != (ORDER,)
    ]  # a setting's runs: below
    if not runs and not list((src / ORDER).glob(f"*/{TUNING}")):
        raise RecordingError(f"no finished runs under {src}; run `scale-lab reproduce` first")
    total = _curate_root(src, dst, runs, ("report.md", SELECTION, TUNING, REFERENCE_LINES), scalars_only)
    total += _curate_rows(src, dst)
    for tuning in sorted((src / ORDER).glob(f"*/{TUNING}")):
        setting = tuning.parent
        reported = (
            [r for r in find_runs(setting) if load_result(r) is not None]
            if (setting / SELECTION).exists()
            else []
        )
        total += _curate_root(
            setting, dst / setting.relative_to(src), reported, (SELECTION, TUNING), scalars_only
        )
    return total


def _curate_rows(src: Path, dst: Path) -> int:
    """The runs of the rows beside the arms (``selection.json``'s ``rows``: the clipping
    sensitivity, Muon at AdamW's embedding/output lr), run-level rows only: the report pairs
    their final losses by seed with their arms."""
    rows = (read_json(src / SELECTION) or {}).get("rows", {})
    runs = [src / run for listed in rows.values() for run in listed]
    return sum(
        curate_run(run, dst / run.relative_to(src), wide=False, scalars_only=True)
        for run in runs
        if load_result(run) is not None
    )


def _curate_root(src: Path, dst: Path, runs: list[Path], side_files, scalars_only: bool = False) -> int:
    """``runs`` (of root ``src``) and ``src``'s ``side_files`` into ``dst``; the vocabulary-
    sized vectors for the first seed only."""
    seed_of = {run: run_settings(run)["seed"] for run in runs}
    first_seed = min(seed_of.values(), default=None)
    total = sum(
        curate_run(
            run, dst / run.relative_to(src), wide=seed_of[run] == first_seed, scalars_only=scalars_only
        )
        for run in runs
    )
    for extra in side_files:
        if (src / extra).exists():
            (dst / extra).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / extra, dst / extra)
    return total


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.results.curate SRC DST``."""
    p = Parser(prog="python -m analysis.results.curate", description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument(
        "--scalars-only",
        action="store_true",
        help="the run-level rows alone, no per-parameter statistics or vectors",
    )
    args = p.parse_args(argv)
    try:
        total = curate(args.src, args.dst, args.scalars_only)
    except RecordingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"curated recordings: {total / 1e6:.2f} MB in {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
