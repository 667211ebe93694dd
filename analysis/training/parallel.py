"""Data parallelism for the trainer: DDP or FSDP2, and the few collectives the optimizers need.

``ddp``: every process holds the whole model; gradients are averaged by DDP, skipped with
``no_sync`` on the non-final micro-steps of an accumulated step.

``fsdp``: FSDP2 ``fully_shard`` on every decoder block and then on the root, so each
parameter is a ``DTensor`` placed ``Shard(0)``: every process owns a block of whole rows.
Gradients arrive as row blocks of the averaged gradient (reduce-scatter). An optimizer works
on the local blocks (``ChainedOptimizer`` does), which is exact for any rule that treats rows
independently: elementwise rules (momentum, sign, Adam) and SCALE's per-row normalization of
``nn.Linear`` weights need no communication. The embedding is normalized over its vocabulary
axis, dim 0, which is the sharded one: its per-column sum of squares, a ``hidden``-sized
vector, is all-reduced (``analysis.optim.maths.inverse_rms``). Rules that need the whole matrix (Newton-
Schulz, SVD projections, whole-tensor norms) are refused rather than
silently applied to a shard
(``analysis.optim.optimizer.check_shardable``).

Checkpoints of an FSDP2 run gather full (unsharded) state on rank 0 with
``torch.distributed.checkpoint.state_dict``, keyed by parameter name.
"""

from __future__ import annotations

import contextlib

import torch

from analysis.optim.sharding import is_dtensor, local


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 on each decoder block, then on the root (embedding, final norm, lm_head).

    Must run before the optimizer is built: it replaces the parameters with ``DTensor`` ones."""
    from torch.distributed.fsdp import fully_shard

    for block in model.model.layers:
        fully_shard(block)
    fully_shard(model)
    return model


def wrap(model: torch.nn.Module, mode: str, world: int) -> torch.nn.Module:
    """The module the training step calls: DDP around the model, or the (already sharded)
    model itself under FSDP2."""
    if world > 1 and mode == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    return model


def gradient_sync(train_model, mode: str, world: int, last: bool):
    """Skip the gradient reduction on non-final micro-steps (DDP ``no_sync``; FSDP2
    ``set_requires_gradient_sync``, which keeps unsharded gradients until the last one)."""
    if world == 1:
        return contextlib.nullcontext()
    if mode == "ddp":
        return contextlib.nullcontext() if last else train_model.no_sync()
    train_model.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def global_grad_norm(model: torch.nn.Module) -> float:
    """``||g||_2`` over every parameter, summing the squares of local blocks across ranks
    when the gradients are sharded (one host sync)."""
    squares = [
        local(p.grad).detach().float().square().sum() for p in model.parameters() if p.grad is not None
    ]
    if not squares:
        return 0.0
    total = torch.stack(squares).sum()
    if any(is_dtensor(p) for p in model.parameters()):
        torch.distributed.all_reduce(total)
    return float(total.sqrt())


def clip_gradients(model: torch.nn.Module, max_norm: float, total_norm: float) -> bool:
    """Scale every gradient by ``max_norm / (total_norm + 1e-6)`` when that is below 1, with
    ``total_norm`` the global norm over every process (``global_grad_norm``):
    ``torch.nn.utils.clip_grad_norm_``'s rule, applied once to the accumulated (and, under DDP,
    all-reduced) gradient; a sharded gradient scales shard by shard. Whether it clipped."""
    coefficient = max_norm / (total_norm + 1e-6)
    if coefficient >= 1.0:
        return False
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(coefficient)
    return True


def full_state_dicts(model, optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state, on CPU, keyed by parameter name (a collective:
    every rank calls it; rank 0 gets the tensors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    # a PartitionedOptimizer (Muon + AdamW, ...) is its inner optimizers, which DCP knows
    return get_state_dict(
        model,
        getattr(optimizer, "optimizers", optimizer),
        options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    )


def load_full_state_dicts(model, optimizer, model_state: dict, optimizer_state: dict) -> None:
    """Shard full state (from ``full_state_dicts``) back onto this process's blocks."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        model,
        getattr(optimizer, "optimizers", optimizer),
        model_state_dict=model_state,
        optim_state_dict=optimizer_state,
        options=StateDictOptions(full_state_dict=True),
    )
    if hasattr(optimizer, "share_inner_groups"):
        optimizer.share_inner_groups()
