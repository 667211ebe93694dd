"""What the optimizers need to know about FSDP2 row shards (torch ``DTensor``), and nothing else.

Under FSDP2 (``analysis.train.parallel``) every parameter is a ``DTensor`` placed ``Shard(0)``:
each process holds a block of whole rows. ``ChainedOptimizer`` runs its transforms on the
local blocks (``local``); a transform that reduces along the sharded axis (the embedding's
dim-0 normalization) asks ``sharded_group`` which process group to all-reduce over.
"""

from __future__ import annotations

from torch.distributed.tensor import DTensor, Shard


def local(t):
    """This process's block of a ``DTensor`` (a view: in-place ops write through); else ``t``.

    >>> import torch
    >>> x = torch.ones(2)
    >>> local(x) is x
    True
    """
    return t.to_local() if isinstance(t, DTensor) else t


def sharded_group(param, dim: int):
    """The process group over which ``param`` is split along ``dim``, or None if it is whole.

    Args: ``param``, a tensor or ``DTensor``; ``dim``, an axis (negative counts from the end).
    Returns: a ``torch.distributed`` process group, or None for a plain tensor or an axis
    that is not sharded.
    """
    if not isinstance(param, DTensor):
        return None
    dim = dim % param.ndim
    for mesh_dim, placement in enumerate(param.placements):
        if isinstance(placement, Shard) and placement.dim == dim:
            return param.device_mesh.get_group(mesh_dim)
    return None
