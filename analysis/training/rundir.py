"""A run directory as an append-only, self-describing record.

- ``config.json`` is written once, when the run starts, and never rewritten.
- ``segments.jsonl`` gets one line per start or resume: the time, the step it starts from,
  the checkpoint it resumed, the git SHA, the settings its steps run with (defaults resolved),
  any setting that changed, and how many recorded rows after the checkpoint were superseded.
  An allowed change takes effect from the first resumed step (``checkpoint.apply_settings``),
  and readers take a run's settings from its last segment (``recording.run_settings``).
- A resume of a directory that holds no run is refused (a mistyped path must not train from
  scratch), and so is a resume of a finished run (``result.json``): its record is never
  rewritten; ``--allow-change`` with more steps extends it, its result then covering every
  segment.
- A resume is refused when ``config.json`` is missing or unreadable, when rows were recorded
  but no checkpoint was saved ("nothing to resume from"), and when a setting that changes the
  experiment (``EXPERIMENT_FIELDS``) differs from the recorded one, unless ``allow_change``,
  and then the change is recorded in the segment.
- One writer: a lock file (``.lock``: pid and host) is taken before anything is written and
  removed when the run ends; a second process is refused; a lock left by a process that is
  no longer running on this host is reported and replaced.
- On a resume from step ``s``, every row recorded after ``s`` (the steps between the last
  checkpoint and the interruption) is removed from ``metrics.jsonl`` and ``spectra.jsonl``
  before the run continues, so each ``(step, param, stat)`` appears exactly once: the rows of
  the continued run supersede them. The files are rewritten through a temporary file and a
  rename, so a failure leaves the old rows.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import analysis.training.checkpoint as checkpoint
from analysis.provenance import provenance
from analysis.recording import (
    CONFIG,
    METRICS,
    RESULT,
    SEGMENTS,
    SPECTRA,
    RecordingError,
    load_result,
    load_segments,
    read_json,
    run_settings,
    write_atomic,
)
from analysis.training.config import HYPER_KEYS, ConfigError, TrainConfig, hyper_record

# Settings whose change turns a resumed run into another experiment (every optimizer setting).
EXPERIMENT_FIELDS = (
    "model",
    "optimizer",
    *HYPER_KEYS,
    "steps",
    "warmup_steps",
    "min_lr_ratio",
    "batch_size",
    "seq_len",
    "seed",
    "precision",
    "data",
    "tokenizer",
    "eval_tokens",
    "grad_clip",
)


LOCK = ".lock"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(run_dir: Path) -> dict | None:
    """The lock's holder ``{"pid", "host"}``, None when there is no lock; a lock left by a
    process that is no longer running on this host is reported and removed (None)."""
    path = run_dir / LOCK
    if not path.exists():
        return None
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        holder = {"pid": -1, "host": socket.gethostname()}  # torn by a crash while being written
    if holder.get("host") == socket.gethostname() and not _running(int(holder.get("pid", -1))):
        print(
            f"note: {run_dir} had a stale lock (pid {holder.get('pid')} is not running); replacing it",
            file=sys.stderr,
        )
        path.unlink(missing_ok=True)
        return None
    return holder


def check_unlocked(run_dir: Path) -> None:
    """``ConfigError`` naming the live process that holds ``run_dir``'s lock, if one does."""
    holder = _holder(run_dir)
    if holder is not None:
        raise ConfigError(
            f"{run_dir} is being written by pid {holder.get('pid')} on "
            f"{holder.get('host')} (lock {run_dir / LOCK}); wait for it to finish, or "
            "remove the lock if that process is gone"
        )


def acquire_lock(run_dir: Path) -> Path:
    """Take ``run_dir``'s writer lock; ``ConfigError`` when another live process holds it."""
    path = run_dir / LOCK
    for _ in range(3):  # a stale lock is removed by _holder, then taken here
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            check_unlocked(run_dir)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
        return path
    check_unlocked(run_dir)
    raise ConfigError(f"cannot take the lock {path}: it keeps changing hands; retry")


def release_lock(run_dir: Path) -> str:
    """Remove the writer lock if this process holds it; "" when done (or not ours), else the
    clause that names the lock left behind and why (a file made unwritable under the run)."""
    path = run_dir / LOCK
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            return (
                f"the lock {path} could not be removed ({err.strerror or err}): remove it by "
                "hand once the file is writable, before the next start"
            )
    return ""


def recorded_config(run_dir: Path) -> TrainConfig:
    """The config a run directory recorded; ``ConfigError`` with the fix when it is missing
    or unreadable."""
    path = run_dir / CONFIG
    fix = f"start a new run directory, or pass --overwrite to replace {run_dir}"
    if not path.exists():
        raise ConfigError(f"cannot resume {run_dir}: it has no {CONFIG}; {fix}")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text())["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"cannot resume {run_dir}: {CONFIG} is unreadable ({err}); {fix}") from None


def _has_rows(run_dir: Path) -> bool:
    path = run_dir / METRICS
    return path.exists() and path.stat().st_size > 0


def effective_settings(config: TrainConfig) -> dict:
    """The config's settings with the defaults it leaves to the recipe and schedule filled
    (what a segment records: the settings its steps ran with)."""
    values = config.to_dict()
    resolved = config.optimizer_config()
    values.update(
        lr=resolved.lr,
        adam_lr=resolved.adam_lr,
        momentum=resolved.momentum,
        vector_rule=resolved.vector_rule,
        warmup_steps=config.warmup(),
        eval_tokens=config.eval_budget(),
        adam_betas=list(config.hyper.betas),
        fused=config.fused_step(),
    )
    return values


def changed_settings(recorded: TrainConfig, config: TrainConfig) -> dict[str, list]:
    """``{field: [recorded, now]}`` for every experiment setting that differs (defaults
    resolved, so ``--lr`` left unset equals the recipe's default given explicitly)."""
    old, new = (hyper_record(c.hyper, every=True) | effective_settings(c) for c in (recorded, config))
    return {f: [old[f], new[f]] for f in EXPERIMENT_FIELDS if old[f] != new[f]}


def refuse_finished(run_dir: Path, config: TrainConfig, allow_change: bool) -> None:
    """A finished run (``result.json``) is never rewritten by a resume: only ``allow_change``
    with more steps than it ran extends it; anything else is refused in one line."""
    result = load_result(run_dir)
    if result is None:
        return
    ran = result.get("steps") or run_settings(run_dir).get("steps") or 0
    if result.get("diverged_at"):
        raise ConfigError(
            f"{run_dir} diverged at step {result['diverged_at']} ({RESULT}); its record "
            "stays as it is: start a new directory with a lower learning rate"
        )
    if config.steps > ran and allow_change:
        return
    extend = (
        f"to train it further, resume with more --steps (now {config.steps}) and --allow-change"
        if config.steps <= ran
        else f"to extend it to {config.steps} steps, pass --allow-change"
    )
    raise ConfigError(
        f"{run_dir} is finished at step {ran} ({RESULT}); nothing to resume and nothing was changed; {extend}"
    )


def check_resume(run_dir: Path, config: TrainConfig, allow_change: bool) -> dict[str, list]:
    """Refuse a resume that would make the records lie (module docstring); returns the
    changed settings (empty unless ``allow_change``)."""
    if not run_dir.is_dir() or not (
        (run_dir / CONFIG).exists() or _has_rows(run_dir) or checkpoint.checkpoints(run_dir)
    ):
        raise ConfigError(
            f"cannot resume {run_dir}: it holds no run (no {CONFIG}, rows or "
            "checkpoint); check the path, or drop --resume to start a fresh run there"
        )
    recorded = recorded_config(run_dir)
    if _has_rows(run_dir) and not checkpoint.checkpoints(run_dir):
        raise ConfigError(
            f"nothing to resume from: {run_dir} has recorded rows but no checkpoint "
            "(save them with --save_every N); start a new directory or pass --overwrite"
        )
    changed = changed_settings(recorded, config)
    if changed and not allow_change:
        listed = ", ".join(f"{f} {old!r} -> {new!r}" for f, (old, new) in changed.items())
        raise ConfigError(
            f"resuming {run_dir} would change the experiment ({listed}); resume with "
            "the recorded settings, pass --allow-change to record the change, or start "
            "a new directory"
        )
    refuse_finished(run_dir, config, allow_change)
    return changed


def _drop_after(path: Path, step: int) -> int:
    """Remove the rows of ``path`` recorded after ``step``; the number removed."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                late = json.loads(line)["step"] > step
            except (ValueError, KeyError):
                late = True  # a line torn by the crash
            if late:
                dropped += 1
            else:
                kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        write_atomic(path, "".join(kept))
    return dropped


def supersede_after(run_dir: Path, step: int) -> int:
    """Remove every row recorded after ``step`` (metrics and spectra); the number removed."""
    return sum(_drop_after(run_dir / name, step) for name in (METRICS, SPECTRA))


# the packages whose change between a run's start and its resume the segment states
WATCHED_VERSIONS = ("torch", "transformers", "datasets", "scale-lab")


def versions_changed(run_dir: Path, now: dict) -> dict[str, list]:
    """``{package: [before, now]}`` for each watched package whose version differs from the
    one the run's last segment (or, for older records, its ``config.json``) ran with."""
    segments = load_segments(run_dir)
    before = next((s["versions"] for s in reversed(segments) if s.get("versions")), None)
    if before is None:
        before = (read_json(run_dir / CONFIG) or {}).get("versions") or {}
    return {
        name: [before.get(name), now.get(name)]
        for name in WATCHED_VERSIONS
        if name in before and before.get(name) != now.get(name)
    }


def versions_note(moved: dict[str, list]) -> str:
    """The one line a resume with other package versions prints (the segment records both)."""
    listed = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in moved.items())
    return (
        f"resuming with other package versions than the run ran with ({listed}); the new "
        "segment records both, and results may differ from an uninterrupted run"
    )


def append_segment(
    run_dir: Path,
    config: TrainConfig,
    start: int,
    resumed_from: str | None,
    changed: dict | None = None,
    superseded: int = 0,
) -> dict:
    """Append this start's record to ``segments.jsonl``: where it starts, what it resumed, the
    settings its steps run with (``effective_settings``) and what changed; returns it."""
    info = provenance()
    moved = versions_changed(run_dir, info["versions"]) if resumed_from is not None else {}
    if moved:
        print(f"note: {versions_note(moved)}", file=sys.stderr)
    segment = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "start_step": start,
        "resumed_from": resumed_from,
        "git_sha": info.get("git_sha"),
        "git_dirty": info.get("git_dirty"),
        "host": info.get("host"),
        "cpu": info.get("cpu"),
        "threads": info.get("threads"),
        "versions": info["versions"],
        "versions_changed": moved,
        "settings": effective_settings(config),
        "changed": changed or {},
        "superseded_rows": superseded,
    }
    try:
        with open(run_dir / SEGMENTS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(segment) + "\n")
    except OSError as err:
        raise RecordingError(
            f"cannot write {run_dir / SEGMENTS} ({err.strerror or err}); nothing was trained in this start"
        ) from None
    return segment
