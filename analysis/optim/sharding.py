"""What the optimizers need to know about FSDP2 row shards (torch ``DTensor``), and nothing else.

Under FSDP2 (``analysis.train.parallel``) every parameter is a ``DTensor`` placed ``Shard(0)``:
each process holds a block of whole rows. ``ChainedOptimizer`` runs its transforms on the
local blocks (``local``); a transform that reduces along the sharded axis (the embedding's
dim-0 normalization) asks ``sharded_group`` which process group to all-reduce over.
"""

from __future__ import annotations

import sys


def is_dtensor(t) -> bool:
    """Whether ``t`` is a ``DTensor``. No ``DTensor`` exists before its module is imported, so
    this asks only once something has imported it: importing ``torch.distributed.tensor`` here
    would add half a second to every ``import analysis.optim``."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


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
