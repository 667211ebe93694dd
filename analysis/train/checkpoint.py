"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint holds the model, optimizer and scheduler state, the step, the tokens seen, every
RNG state, each rank's data position, and an identity (model name, optimizer, parameter shapes,
state layout) that ``load_latest`` checks so a checkpoint of another model or optimizer is
refused instead of half-loaded. The position of finite data is empty (batch ``s`` is a pure
function of ``(seed, s)``, ``toy_models.data``); a stream's is where each rank's share stands
(``toy_models.stream``), so resuming seeks there and never re-reads data to skip it.

Files are written to a temporary name and renamed, so a crash never leaves a torn checkpoint;
only the newest ``keep`` are kept. ``gather`` collects the state from every rank (the plain
``state_dict()``, or the unsharded name-keyed state of an FSDP2 run, ``analysis.train.parallel``);
``resume`` puts it back; the identity records which of the two layouts a checkpoint holds.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import torch

from analysis.train import parallel

PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that belongs to another run (model, optimizer, layout or shapes)."""
    pass


def identity(config: dict, model: torch.nn.Module, layout: str = "plain") -> dict:
    """What a checkpoint must match to be resumed: model, optimizer, momentum placement,
    parameter shapes, and the state ``layout`` ("plain" or "fsdp", see ``analysis.train.parallel``)."""
    return {"model": config["model"], "optimizer": config["optimizer"],
            "momentum": config.get("momentum"), "layout": layout,
            "shapes": {n: list(p.shape) for n, p in model.named_parameters()}}


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
    mine = data.state_dict()
    positions = [mine] * world
    if world > 1:
        torch.distributed.all_gather_object(positions, mine)
    return model_state, optimizer_state, positions


def save(run_dir: Path, step: int, model_state: dict, optimizer_state: dict, positions: list,
         scheduler, ident: dict, extra: dict, keep: int = 2) -> Path:
    """Write checkpoint ``ckpt-<step>.pt`` atomically (temporary file, then rename) and keep
    only the newest ``keep``. Returns its path."""
    state = {"step": step, "identity": ident, "model": model_state, "data": positions,
             "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
             **extra}
    path = Path(run_dir) / f"ckpt-{step:08d}.pt"
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    except OSError as err:   # disk full, permissions: the previous checkpoints stay as they were
        tmp.unlink(missing_ok=True)
        kept = checkpoints(run_dir)
        raise CheckpointError(f"cannot write checkpoint {path} ({err.strerror or err}); the last "
                              f"good one, {kept[-1].name if kept else 'none'}, is kept; free space "
                              "or fix permissions, then --resume") from None
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def load_latest(run_dir: Path, ident: dict) -> dict | None:
    """The newest checkpoint in ``run_dir`` after checking it belongs to ``ident`` (None if
    there is none). Nothing is applied: ``resume`` does that."""
    found = checkpoints(run_dir)
    if not found:
        return None
    state = torch.load(found[-1], map_location="cpu", weights_only=False)
    saved = state["identity"]
    hints = {"layout": "(fsdp: --parallel fsdp under torchrun; plain: single process or DDP) "}
    for key in ("model", "optimizer", "momentum", "layout"):
        if saved.get(key, "plain" if key == "layout" else None) != ident.get(key):
            raise CheckpointError(f"checkpoint {found[-1]} was written for {key} "
                                  f"{saved.get(key)!r}, this run uses {ident.get(key)!r}; resume with "
                                  f"the same settings {hints.get(key, '')}or start a new run "
                                  "directory")
    if saved["shapes"] != ident["shapes"]:
        raise CheckpointError(f"checkpoint {found[-1]} has different parameter shapes; "
                              "it belongs to another model configuration")
    return state


def resume(run_dir: Path, model, optimizer, scheduler, data, ident: dict, sharded: bool,
           rank: int) -> int:
    """Restore the newest checkpoint of ``run_dir`` into the model, optimizer, scheduler, this
    rank's data position and the RNGs; the step to continue from (0 if there is none)."""

    state = load_latest(run_dir, ident)
    if state is None:
        return 0
    if sharded:
        parallel.load_full_state_dicts(model, optimizer, state["model"], state["optimizer"])
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    positions = state.get("data") or [{}]  # a stream checks the number of processes itself
    data.load_state_dict(positions[rank % len(positions)])
    _restore_rng(state)
    return state["step"]


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
