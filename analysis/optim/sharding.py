"""What the optimizers need to know about FSDP2 row shards (torch ``DTensor``), and nothing else.

Under FSDP2 (``analysis.training.parallel``) every parameter is a ``DTensor`` placed ``Shard(0)``:
each process holds a block of whole rows. ``ChainedOptimizer`` runs its transforms on the
local blocks (``local``); a transform that reduces along the sharded axis (the embedding's
dim-0 normalization) asks ``sharded_group`` which process group to all-reduce over. A rule
that needs the whole matrix (Newton-Schulz, a Frobenius norm: ``row_shard_safe = False``) runs
through ``whole_matrix_update``: the gradient, the parameter and the state gathered, the rule
run once on the whole matrix, this process's rows kept (as torchtitan and microsoft/dion run
Muon under FSDP2); the state stays stored as row shards, so checkpoints are unchanged.
"""

from __future__ import annotations

import sys

import torch


def is_dtensor(t) -> bool:
    """Whether ``t`` is a ``DTensor``. No ``DTensor`` exists before its module is imported, so
    this asks only once something has imported it: importing ``torch.distributed.tensor`` here
    would add half a second to every ``import analysis.optim``."""
    return any_dtensor((t,))


def any_dtensor(tensors) -> bool:
    """``any(is_dtensor(t) for t in tensors)``, the module looked up once (asked every step)."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and any(isinstance(t, module.DTensor) for t in tensors)


def local(t):
    """This process's block of a ``DTensor`` (a view: in-place ops write through); else ``t``.

    >>> import torch
    >>> x = torch.ones(2)
    >>> local(x) is x
    True
    """
    return t.to_local() if is_dtensor(t) else t


def sharded_group(param, dim: int):
    """The process group over which ``param`` is split along ``dim``, or None if it is whole.

    Args: ``param``, a tensor or ``DTensor``; ``dim``, an axis (negative counts from the end).
    Returns: a ``torch.distributed`` process group, or None for a plain tensor or an axis
    that is not sharded.
    """
    if not is_dtensor(param):
        return None
    from torch.distributed.tensor import Shard

    dim = dim % param.ndim
    for mesh_dim, placement in enumerate(param.placements):
        if isinstance(placement, Shard) and placement.dim == dim:
            return param.device_mesh.get_group(mesh_dim)
    return None


def _local_rows(full, like):
    """This process's row block of ``full``, as ``DTensor`` ``like`` splits its dim 0
    (``torch.chunk`` over the mesh, as ``Shard(0)`` does)."""
    mesh = like.device_mesh
    chunks = torch.chunk(full, mesh.size(), dim=0)
    rank = mesh.get_local_rank()
    return chunks[rank] if rank < len(chunks) else full[:0]


def whole_matrix_update(transform, param, state: dict):
    """``transform.update`` of a row-sharded ``param`` computed on the whole matrix: gradient,
    parameter and ``DTensor`` state gathered (collectives: every process calls this for the
    same parameters in the same order), the rule run once, the updated state's and the
    direction's rows of this process written back / returned."""
    grad, whole = param.grad.full_tensor(), param.full_tensor()
    gathered = {k: v.full_tensor() if is_dtensor(v) else v for k, v in state.items()}
    direction = transform.update(grad, gathered, whole)
    if hasattr(direction, "materialize"):  # a normalize's Scaled: base x scale, whole
        direction = direction.materialize()
    for key, value in gathered.items():
        if is_dtensor(state[key]):
            local(state[key]).copy_(_local_rows(value, state[key]))
        else:
            state[key] = value  # step counts and other scalars
    return _local_rows(direction, param)
