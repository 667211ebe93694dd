"""Reading an optimizer without stepping it: the tensors its state holds (and their bytes and
elements), and one row per parameter group (label, fan-in axes, size, lr, weight decay, rule),
as rows or as the text table ``optimizer.describe()`` prints.

Works on any ``torch.optim.Optimizer``; a ``PartitionedOptimizer`` (anything with an
``optimizers`` list) is read through its inner optimizers.
"""

from __future__ import annotations

import torch


def state_tensors(optimizer: torch.optim.Optimizer):
    """Every tensor held in ``optimizer.state``, including those inside helper objects kept
    there (pytorch-optimizer's GaLore keeps its SVD projector in a ``GaLoreProjector``)."""
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                yield value
            elif hasattr(value, "__dict__"):
                yield from (v for v in vars(value).values() if torch.is_tensor(v))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the tensors of ``optimizer.state`` (scalars of size 1 included)."""
    return sum(t.numel() * t.element_size() for t in state_tensors(optimizer))


def state_numel(optimizer: torch.optim.Optimizer, min_ndim: int = 1) -> int:
    """Elements of state tensors with at least ``min_ndim`` dims (step counters excluded)."""
    return sum(t.numel() for t in state_tensors(optimizer) if t.ndim >= min_ndim)


def group_rows(optimizer: torch.optim.Optimizer) -> list[dict]:
    """One row per parameter group: label, fan-in axes (None for vectors), tensors, elements,
    lr, weight decay and rule: the transform chain for a ``ChainedOptimizer`` group, the inner
    optimizer's class for a ``PartitionedOptimizer``'s other groups (or any torch optimizer)."""
    rows = []
    for opt in getattr(optimizer, "optimizers", [optimizer]):
        for i, group in enumerate(opt.param_groups):
            rows.append(
                {
                    "group": group.get("label", str(i)),
                    "fan_in": group.get("fan_in"),
                    "tensors": len(group["params"]),
                    "elements": sum(p.numel() for p in group["params"]),
                    "lr": group["lr"],
                    "weight_decay": group.get("weight_decay", 0.0),
                    "rule": (
                        repr(opt.transform_of(group)) if hasattr(opt, "transform_of") else type(opt).__name__
                    ),
                }
            )
    return rows


def describe(optimizer: torch.optim.Optimizer) -> str:
    """``group_rows`` as text, then, for an optimizer from ``build_optimizer``, the roles table
    (one line per parameter: layer, role, fan-in axes and the rule that decided,
    ``roles.Layout.rows``)."""
    lines = [f"{'group':<10} {'fan-in':<7} {'tensors':>7} {'elements':>11} {'lr':>9} {'wd':>6}  rule"]
    for r in group_rows(optimizer):
        fan_in = ",".join(map(str, r["fan_in"])) if r["fan_in"] else "-"
        lines.append(
            f"{r['group']:<10} {fan_in:<7} {r['tensors']:>7} {r['elements']:>11,} "
            f"{r['lr']:>9.3g} {r['weight_decay']:>6.3g}  {r['rule']}"
        )
    layout = getattr(optimizer, "layout", None)  # set by build_optimizer
    if layout is not None:
        lines += ["", layout.table()]
    return "\n".join(lines)
