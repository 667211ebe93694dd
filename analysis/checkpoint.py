"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint holds the model, optimizer and scheduler state, the step, the tokens seen, every
RNG state, and an identity (model name, optimizer, parameter shapes) that ``load`` checks so a
checkpoint of another model or optimizer is refused instead of half-loaded. The data position
needs no state: batch ``s`` is a pure function of ``(seed, s)`` (see ``toy_models.data``).

Files are written to a temporary name and renamed, so a crash never leaves a torn checkpoint;
only the newest ``keep`` are kept.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import torch

PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(ValueError):
    pass


def identity(config: dict, model: torch.nn.Module) -> dict:
    return {"model": config["model"], "optimizer": config["optimizer"],
            "momentum": config.get("momentum"),
            "shapes": {n: list(p.shape) for n, p in model.named_parameters()}}


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob("ckpt-*.pt") if PATTERN.match(p.name))


def save(run_dir: Path, step: int, model, optimizer, scheduler, ident: dict, extra: dict,
         keep: int = 2) -> Path:
    state = {"step": step, "identity": ident, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
             **extra}
    path = Path(run_dir) / f"ckpt-{step:08d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def load_latest(run_dir: Path, model, optimizer, scheduler, ident: dict) -> dict | None:
    """Restore the newest checkpoint in ``run_dir`` into the given objects; None if there is none."""
    found = checkpoints(run_dir)
    if not found:
        return None
    state = torch.load(found[-1], map_location="cpu", weights_only=False)
    saved = state["identity"]
    for key in ("model", "optimizer", "momentum"):
        if saved.get(key) != ident.get(key):
            raise CheckpointError(f"checkpoint {found[-1]} was written for {key} "
                                  f"{saved.get(key)!r}, this run uses {ident.get(key)!r}; resume with "
                                  "the same settings or start a new run directory")
    if saved["shapes"] != ident["shapes"]:
        raise CheckpointError(f"checkpoint {found[-1]} has different parameter shapes; "
                              "it belongs to another model configuration")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state
