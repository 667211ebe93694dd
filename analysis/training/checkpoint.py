"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint holds the model, optimizer and scheduler state, the step, the tokens seen, every
RNG state, each rank's data position, and an identity (model name, optimizer, parameter shapes,
state layout) that ``load_latest`` checks so a checkpoint of another model or optimizer is
refused instead of half-loaded. The position of finite data is empty (batch ``s`` is a pure
function of ``(seed, s)``, ``toy_models.data``); a stream's is where each rank's share stands
(``toy_models.stream``), so resuming seeks there and never re-reads data to skip it.

Files are written to a temporary name and renamed, so a crash never leaves a torn checkpoint;
only the newest ``keep`` are kept. ``gather`` collects the state from every rank (the plain
``state_dict()``, or the unsharded name-keyed state of an FSDP2 run, ``analysis.training.parallel``);
``resume`` puts it back; the identity records which of the two layouts a checkpoint holds.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import torch

import analysis.training.parallel as parallel
import toy_models.files as files

PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that belongs to another run (model, optimizer, layout or shapes)."""

    pass


def identity(config: dict, model: torch.nn.Module, layout: str = "plain") -> dict:
    """What a checkpoint must match to be resumed: model, optimizer, momentum placement,
    parameter shapes, and the state ``layout`` ("plain" or "fsdp", see ``analysis.training.parallel``)."""
    return {
        "model": config["model"],
        "optimizer": config["optimizer"],
        "momentum": config.get("momentum"),
        "layout": layout,
        "shapes": {n: list(p.shape) for n, p in model.named_parameters()},
    }


def checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints of ``run_dir``, oldest first."""
    return sorted(p for p in Path(run_dir).glob("ckpt-*.pt") if PATTERN.match(p.name))


def gather(model, optimizer, data, sharded: bool, world: int) -> tuple[dict, dict, list]:
    """Model state, optimizer state and every rank's data position (a collective when
    ``world > 1``: every rank calls it; rank 0 saves)."""

    if sharded:
        model_state, optimizer_state = parallel.full_state_dicts(model, optimizer)
    else:
        model_state, optimizer_state = model.state_dict(), optimizer.state_dict()
    local = data.state_dict()
    positions = [local] * world
    if world > 1:
        torch.distributed.all_gather_object(positions, local)
    return model_state, optimizer_state, positions


def save(
    run_dir: Path,
    step: int,
    model_state: dict,
    optimizer_state: dict,
    positions: list,
    scheduler,
    ident: dict,
    extra: dict,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``ckpt-<step>.pt`` atomically (temporary file, then rename) and keep
    only the newest ``keep``. Returns its path."""
    state = {
        "step": step,
        "identity": ident,
        "model": model_state,
        "data": positions,
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        **extra,
    }
    path = Path(run_dir) / f"ckpt-{step:08d}.pt"
    try:
        files.replace_atomically(path, lambda tmp: torch.save(state, tmp))
    except (OSError, RuntimeError) as err:  # disk full, permissions: torch.save raises either
        raise CheckpointError(f"cannot write checkpoint {path} ({_cause(err)}); {advice(run_dir)}") from None
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        try:
            old.unlink()
        except OSError as err:
            raise CheckpointError(
                f"cannot remove the older checkpoint {old} ({_cause(err)}); the "
                f"last good checkpoint, {path.name}, is kept: fix permissions, "
                "then --resume"
            ) from None
    return path


# what ``resume`` reads from a checkpoint, key by key (a missing one is refused, not half-loaded)
REQUIRED = {
    "step": (),
    "identity": ("model", "optimizer", "shapes"),
    "model": (),
    "optimizer": (),
    "scheduler": ("last_epoch",),
    "rng": ("torch", "python"),
}


def _refuse(path: Path, problem: str, run_dir: Path) -> CheckpointError:
    """The one line for a checkpoint that cannot be resumed: which file, what is wrong, and
    what to do (move it aside to fall back on the one before, if there is one)."""
    older = [c.name for c in checkpoints(run_dir) if c != path]
    fallback = (
        f"move it aside to resume from {older[-1]}"
        if older
        else "no older checkpoint exists: start a new run directory or pass --overwrite"
    )
    return CheckpointError(f"cannot resume from checkpoint {path}: {problem}; {fallback}")


def read(path: Path, run_dir: Path) -> dict:
    """The checkpoint at ``path``, checked to hold every key ``resume`` reads (``REQUIRED``);
    ``CheckpointError`` (one line) for a torn file or a missing key."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for a torn file
        raise _refuse(path, f"the file is torn or not a checkpoint ({type(err).__name__})", run_dir) from None
    if not isinstance(state, dict):
        raise _refuse(path, "the file is not a checkpoint (no dict inside)", run_dir)
    for key, inner in REQUIRED.items():
        if key not in state:
            raise _refuse(path, f"it has no {key!r} entry", run_dir)
        missing = [k for k in inner if not isinstance(state[key], dict) or k not in state[key]]
        if missing:
            raise _refuse(path, f"its {key!r} entry has no {', '.join(map(repr, missing))}", run_dir)
    missing = _optimizer_missing(state["optimizer"])
    if missing:
        raise _refuse(path, f"its 'optimizer' entry has no {', '.join(map(repr, missing))}", run_dir)
    return state


def _optimizer_missing(entry) -> list[str]:
    """The keys a torch optimizer state dict needs that ``entry`` lacks: in itself, or in each
    part of a ``PartitionedOptimizer``'s ``{"partitioned": [...]}`` (Muon + AdamW, ...)."""
    parts = entry.get("partitioned") if isinstance(entry, dict) else None
    dicts = parts if isinstance(parts, list) and parts else [entry]
    return sorted(
        {k for d in dicts for k in ("state", "param_groups") if not isinstance(d, dict) or k not in d}
    )


def _first_line(err: BaseException, limit: int = 200) -> str:
    """An error's first line of text (its type's name when it has none), cut at ``limit``."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


def _cause(err: BaseException) -> str:
    """An OS error's own words (``No space left on device``), found inside torch's wrapping;
    else the first line of torch's message."""
    first = _first_line(err, 160)
    while err is not None:
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
        err = err.__cause__ or err.__context__
    return first


def advice(run_dir: Path) -> str:
    """What to do after a failed write, naming what exists."""
    kept = checkpoints(run_dir)
    if kept:
        return f"the last good checkpoint, {kept[-1].name}, is kept: free space or fix permissions, then --resume"
    return (
        "no checkpoint was saved yet, so the run cannot be resumed: free space or fix "
        "permissions, then start it again with --overwrite"
    )


def load_latest(run_dir: Path, ident: dict) -> dict | None:
    """The newest checkpoint in ``run_dir`` after checking it is whole (``read``) and belongs to
    ``ident`` (None if there is none). Nothing is applied: ``resume`` does that."""
    found = checkpoints(run_dir)
    if not found:
        return None
    state = read(found[-1], run_dir)
    saved = state["identity"]
    hints = {"layout": "(fsdp: --parallel fsdp under torchrun; plain: single process or DDP) "}
    for key in ("model", "optimizer", "momentum", "layout"):
        if saved.get(key, "plain" if key == "layout" else None) != ident.get(key):
            raise CheckpointError(
                f"checkpoint {found[-1]} was written for {key} "
                f"{saved.get(key)!r}, this run uses {ident.get(key)!r}; resume with "
                f"the same settings {hints.get(key, '')}or start a new run "
                "directory"
            )
    if saved["shapes"] != ident["shapes"]:
        raise CheckpointError(
            f"checkpoint {found[-1]} has different parameter shapes; "
            "it belongs to another model configuration"
        )
    return state


def hyperparameters(optimizer) -> list[dict]:
    """Each parameter group's settings (everything but its parameters), as built from the config."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def apply_settings(optimizer, scheduler, settings: list[dict]) -> None:
    """Put the run's own ``settings`` (``hyperparameters`` of the freshly built optimizer) back
    over the loaded ones, and the scheduler onto them: loading a state dict brings back the old
    lr, ``initial_lr`` and weight decay, so without this a resume with ``--allow-change`` would
    record a change it never made. The scheduler keeps its step (``last_epoch``), takes the new
    peak lrs (``base_lrs``) and its own, new, schedule function; the next step's lr is
    ``base * factor(last_epoch)``, which on an unchanged resume is bitwise the value the
    checkpoint held."""
    for group, values in zip(optimizer.param_groups, settings):
        group.update(values)  # keys added while stepping (a library's "step" count) stay
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def resume(
    run_dir: Path, model, optimizer, scheduler, data, ident: dict, sharded: bool, rank: int
) -> tuple[int, int | None]:
    """Restore the newest checkpoint of ``run_dir`` into the model, optimizer, scheduler, this
    rank's data position and the RNGs, with the run's own settings over the saved ones
    (``apply_settings``); the step to continue from and the tokens seen by then ((0, 0) if there
    is none). ``CheckpointError`` (one line) when a part does not fit this run."""
    state = load_latest(run_dir, ident)
    if state is None:
        return 0, 0
    path = checkpoints(run_dir)[-1]
    settings = hyperparameters(optimizer)
    try:
        if sharded:
            parallel.load_full_state_dicts(model, optimizer, state["model"], state["optimizer"])
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise _refuse(
            path, f"its model or optimizer state does not fit this run ({_first_line(err)})", run_dir
        ) from None
    try:
        scheduler.load_state_dict(state["scheduler"])
        positions = state.get("data") or [{}]  # a stream checks the number of processes itself
        data.load_state_dict(positions[rank % len(positions)])
        _restore_rng(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise _refuse(
            path,
            f"its scheduler, data position or RNG state is unreadable "
            f"({type(err).__name__}: {_first_line(err)})",
            run_dir,
        ) from None
    apply_settings(optimizer, scheduler, settings)
    return state["step"], state.get("tokens_seen")


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
