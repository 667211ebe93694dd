"""Run directories: what a run writes and the one call that reads it back.

A run directory holds:

- ``config.json``: the resolved config plus provenance (git SHA and dirty flag, package
  versions, seed, device, start time);
- ``metrics.jsonl``: the tidy long table, one JSON object per line,
  ``{"step", "param", "role", "stat", "value"}``; run-level metrics (loss, lr, tokens/s, eval
  loss and perplexity) are rows with ``param`` and ``role`` null;
- ``spectra.jsonl``: vector-valued records ``{"step", "param", "role", "stat", "values": [...]}``
  (singular values, per-row statistics);
- ``result.json``: written last; its presence marks a finished run.

JSONL is append-only: every row batch is written and flushed before training goes on, so a
``kill -9`` loses at most the rows of the step in flight, and a torn last line is skipped on
load. ``load_run`` returns a pandas DataFrame (``analysis.results.root.load_runs``: a whole root).

Curated copies (the reference recordings shipped under ``data/recordings``, made by
``python -m analysis.results.curate``) hold the same tables gzipped: ``metrics.jsonl.gz`` and
``spectra.jsonl.gz``; every reader here accepts either form.
"""

from __future__ import annotations

import gzip
import json
import json.scanner
import math
from pathlib import Path
from typing import TYPE_CHECKING

import toy_models.files as files  # the one atomic-write helper (it imports nothing of ours)

if TYPE_CHECKING:  # pandas takes most of a second to import: only the readers need it
    import pandas as pd

METRICS = "metrics.jsonl"
SPECTRA = "spectra.jsonl"
CONFIG = "config.json"
RESULT = "result.json"
SELECTION = "selection.json"  # a tuned root: the reported runs among its sweep points
TUNING = "tuning.json"  # a tuned root: every sweep point's losses, the best lr, the budget
REFERENCE_LINES = "reference_losses.json"  # a root: the corpus's unigram and bigram losses
ORDER = "order"  # a tuned root: the ladder re-tuned at other settings, one dir each
SEGMENTS = "segments.jsonl"  # a run: one line per start or resume (analysis.training.rundir)


class RecordingError(ValueError):
    """A run directory that is missing, empty or not one; the message names it."""

    pass


def _clean(value):
    """JSON-safe float (NaN/inf become null so every line stays valid JSON)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _write_failed(path: Path, err: OSError) -> RecordingError:
    """The one line a failed write to a run's file gives (nothing before it is lost; the
    trainer adds what can be resumed)."""
    return RecordingError(f"cannot write {path} ({err.strerror or err}); the rows written before it are kept")


def write_atomic(path: str | Path, text: str) -> Path:
    """Write the text file ``path`` whole or not at all (``toy_models.files.replace_atomically``: a
    unique temporary name beside it, then a rename); ``RecordingError`` (one line) on failure,
    with the temporary file removed. Every JSON and table rewrite of a run or root goes here."""
    path = Path(path)
    try:
        return files.replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as err:
        raise _write_failed(path, err) from None


class NullRecorder:
    """Records nothing: the recorder of a run without a directory and of every process but
    rank 0, so the training loop calls one recorder without asking whether there is one.
    It is falsy, so ``recorder or None`` hands code with an optional recorder its ``None``."""

    trackers = ()

    def __bool__(self) -> bool:
        return False

    def has_config(self) -> bool:
        return True

    def write_config(self, config: dict) -> None: ...

    def log(self, step: int, stats: dict, param: str | None = None, role: str | None = None) -> None: ...

    def log_rows(self, rows) -> None: ...

    def log_vector(self, step: int, param, role, stat: str, values) -> None: ...

    def finish(self, result: dict, required=()) -> None: ...

    def close(self) -> None: ...


RESULT_KEYS = ("steps", "first_eval_loss", "final_eval_loss", "final_perplexity")


def check_result(result: dict, run_dir: Path, required=()) -> None:
    """A result holds every ``required`` key (the trainer's: ``RESULT_KEYS``) and finite
    numbers, but the final losses of a run recorded as diverged (``diverged_at``);
    ``RecordingError`` naming what is not."""
    missing = [k for k in required if k not in result]
    exempt = ("final_eval_loss", "final_perplexity") if result.get("diverged_at") else ()
    bad = [k for k, v in result.items() if isinstance(v, float) and not math.isfinite(v) and k not in exempt]
    if missing or bad:
        raise RecordingError(
            f"refusing to write {run_dir / RESULT}: "
            + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"not finite: {', '.join(bad)}"] if bad else [])
            )
            + "; the run's rows and checkpoints are kept"
        )


class Recorder:
    """Appends rows to a run directory; safe to use from one process (rank 0)."""

    def __init__(self, run_dir: str | Path, trackers=()):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.run_dir / METRICS, "a", encoding="utf-8")
        self._spectra = None
        self._failed = False  # a write failed and was reported: close() must not raise again
        # also sent each row after it is written (analysis.instrument.trackers)
        self.trackers = list(trackers)

    def has_config(self) -> bool:
        """Does the run directory hold its ``config.json`` yet?"""
        return (self.run_dir / CONFIG).exists()

    def write_config(self, config: dict) -> None:
        write_atomic(self.run_dir / CONFIG, json.dumps(config, indent=2, default=str) + "\n")

    def log(
        self, step: int, stats: dict[str, float], param: str | None = None, role: str | None = None
    ) -> None:
        """Rows ``(step, param, role, stat, value)`` for each entry of ``stats``, flushed."""
        self.log_rows([(step, param, role, k, v) for k, v in stats.items()])

    def log_rows(self, rows) -> None:
        """Append ``(step, param, role, stat, value)`` rows, flushed; ``RecordingError`` (one
        line) when they cannot be written."""
        lines = [
            json.dumps({"step": int(s), "param": p, "role": r, "stat": k, "value": _clean(v)})
            for s, p, r, k, v in rows
        ]
        if lines:
            try:
                self._metrics.write("\n".join(lines) + "\n")
                self._metrics.flush()
            except OSError as err:
                self._failed = True
                raise _write_failed(self.run_dir / METRICS, err) from None
        rows = [(s, p, r, k, v) for s, p, r, k, v in rows if v is not None]
        for tracker in self.trackers:
            tracker.log_rows(rows)

    def log_vector(self, step: int, param: str | None, role: str | None, stat: str, values) -> None:
        row = {
            "step": int(step),
            "param": param,
            "role": role,
            "stat": stat,
            "values": [_clean(v) for v in values],
        }
        try:
            if self._spectra is None:
                self._spectra = open(self.run_dir / SPECTRA, "a", encoding="utf-8")
            self._spectra.write(json.dumps(row) + "\n")
            self._spectra.flush()
        except OSError as err:
            self._failed = True
            raise _write_failed(self.run_dir / SPECTRA, err) from None
        for tracker in self.trackers:
            tracker.log_vector(step, param, role, stat, row["values"])

    def finish(self, result: dict, required=()) -> None:
        """Write ``result.json`` (it marks the run finished), once ``check_result`` passes."""
        check_result(result, self.run_dir, required)
        write_atomic(self.run_dir / RESULT, json.dumps(result, indent=2, default=str) + "\n")

    def close(self) -> None:
        """Close the tables and trackers; after a reported write failure the unwritable buffer
        is dropped (the rows before it are on disk) instead of failing a second time."""
        failure = None
        for name, handle in ((METRICS, self._metrics), (SPECTRA, self._spectra)):
            if handle is not None and not handle.closed:
                try:
                    handle.close()
                except OSError as err:
                    if not self._failed and failure is None:
                        failure = _write_failed(self.run_dir / name, err)
        self._failed = self._failed or failure is not None
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
        if failure is not None:
            raise failure

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def table_path(run_dir: Path, name: str) -> Path:
    """``name`` or its gzipped curated form ``name.gz``."""
    plain = run_dir / name
    packed = run_dir / (name + ".gz")
    return packed if not plain.exists() and packed.exists() else plain


def _read_jsonl(path: Path, torn: list | None = None) -> list[dict]:
    """The rows of a JSONL table; a line torn by a crash mid-write (or otherwise unreadable) is
    skipped and, with ``torn``, its line number appended there."""
    rows = []
    if not path.exists():
        return rows
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            row = _parse_line(line)
            if isinstance(row, dict):
                rows.append(row)
            elif line.strip() and torn is not None:
                torn.append(number)
    return rows


def _parse_line(line: str, scan=json.scanner.make_scanner(json.JSONDecoder())):  # noqa: B008 (once, on purpose)
    """``json.loads(line)``, or None where it raises: the C scanner called directly (the
    shipped recordings are a million lines; this reads them in half the time of ``loads``)."""
    text = line.strip(" \t\n\r")  # the whitespace JSON allows around a value
    try:
        row, end = scan(text, 0)
    except (StopIteration, json.JSONDecodeError):
        return None
    return row if end == len(text) else None


def bad_rows(frame: pd.DataFrame, torn: int = 0) -> str | None:
    """One run's bad rows in words: how many lines were unreadable and which statistics hold
    non-finite values, counted by kind (NaN or null, as this toolkit records them; Infinity
    and -Infinity, which JSON readers also accept), None when there are none."""
    import pandas as pd

    column = "value" if "value" in frame else None
    parts = [f"{torn} unreadable line(s) skipped"] if torn else []
    if column is not None:
        values = pd.to_numeric(frame[column], errors="coerce")
        kinds = {
            "NaN or null": values.isna(),
            "Infinity": values == math.inf,
            "-Infinity": values == -math.inf,
        }
        bad = kinds["NaN or null"] | kinds["Infinity"] | kinds["-Infinity"]
        if bad.any():
            counts = frame[bad]["stat"].value_counts()
            parts.append(
                f"{int(bad.sum())} non-finite value(s): "
                + ", ".join(f"{int(mask.sum())} {kind}" for kind, mask in kinds.items() if mask.any())
                + " ("
                + ", ".join(f"{stat} x{n}" for stat, n in counts.items())
                + ")"
            )
    return "; ".join(parts) or None


def is_run_dir(path: str | Path) -> bool:
    """Does ``path`` hold ``config.json`` and a metrics table (plain or gzipped)?"""
    return (Path(path) / CONFIG).exists() and table_path(Path(path), METRICS).exists()


def run_config(run_dir: str | Path) -> dict:
    """The ``config.json`` of a run directory, as a dict (the settings as it started; the
    settings its steps ran with: ``run_settings``)."""
    return json.loads((Path(run_dir) / CONFIG).read_text())


def load_segments(run_dir: str | Path) -> list[dict]:
    """The start and resume records of a run directory (``segments.jsonl``), oldest first (a
    line torn by a crash is skipped)."""
    return _read_jsonl(Path(run_dir) / SEGMENTS)


def run_settings(run_dir: str | Path) -> dict:
    """The settings a run's steps ran with: ``config.json``'s config (written once, at the
    start), updated by the last segment's settings, so a resume with ``--allow-change`` (more
    steps, another lr) is read as what it did. Segments of before settings were recorded
    contribute their ``changed`` values."""
    settings = dict(run_config(run_dir).get("config", {}))
    for segment in load_segments(run_dir):
        if "settings" in segment:
            settings.update(segment["settings"])
        else:
            settings.update({k: new for k, (_, new) in segment.get("changed", {}).items()})
    return settings


def read_json(path: str | Path) -> dict | None:
    """A JSON file's contents, or None when it does not exist (``result.json`` of an
    unfinished run; a root's ``tuning.json``, ``selection.json``, ``reference_losses.json``)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def load_result(run_dir: str | Path) -> dict | None:
    """The ``result.json`` of a run directory (None while the run is unfinished)."""
    return read_json(Path(run_dir) / RESULT)


def load_run(run_dir: str | Path, table: str = "metrics", name: str | None = None) -> pd.DataFrame:
    """One run's tidy rows (``table="metrics"``) or vector records (``"spectra"``), with a
    ``run`` column (``name``, default the directory name) and the run's optimizer, model, seed."""
    import pandas as pd

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RecordingError(f"{run_dir} is not a run directory (needs {CONFIG} and {METRICS})")
    torn: list[int] = []
    rows = _read_jsonl(table_path(run_dir, METRICS if table == "metrics" else SPECTRA), torn)
    columns = ["step", "param", "role", "stat", "value" if table == "metrics" else "values"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["bad_rows"] = {name or run_dir.name: bad_rows(frame, len(torn))}
    config = run_settings(run_dir)
    frame.insert(0, "run", name or run_dir.name)
    for key in ("optimizer", "model", "seed"):
        frame[key] = config.get(key)
    frame["label"] = config.get("label") or config.get("optimizer")
    return frame


def scalars(frame: pd.DataFrame, stat: str) -> pd.DataFrame:
    """Run-level rows of one statistic (``param`` null), e.g. ``scalars(df, "loss")``."""
    return frame[(frame["stat"] == stat) & frame["param"].isna()]
