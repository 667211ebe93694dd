"""Label every parameter of a model with its role, from module types (never name substrings).

Roles:

- ``output``: the weight of the model's output head (``model.get_output_embeddings()``);
- ``embedding``: the weight of an ``nn.Embedding``;
- ``vector``: any parameter with fewer than 2 dims (RMSNorm gains, biases);
- ``hidden``: every other matrix of an ``nn.Linear`` (attention and MLP projections).

A matrix of any other layer type (transformers' ``Conv1D``, which stores ``(in, out)``;
``nn.Conv2d``; ``nn.MultiheadAttention``'s packed projection) matches no default rule and is
refused with its type named: its fan-in axis is not guessed, since normalizing the wrong axis
trains silently and wrongly.

Rules are ordered ``(role, predicate)`` pairs, first match wins. ``assign_roles`` raises when a
parameter matches no rule, when a rule matches nothing (a typo guard), or when one tensor is
reached under two roles (tied embedding and head weights, which SCALE treats differently).

The fan-in axis (the axis SCALE normalizes over) is a property of the layer type:
``nn.Linear`` stores ``(out, in)`` so it is dim 1; ``nn.Embedding`` stores ``(vocab, d)`` and
acts as a linear map from a one-hot vocab input, so it is dim 0.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ROLES = ("embedding", "hidden", "output", "vector")
Predicate = Callable[[nn.Module, nn.Module, str, torch.Tensor], bool]


class RoleError(ValueError):
    """A parameter without a role, a rule that matches nothing, or tied weights."""
    pass


def _output_head(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None


def default_rules() -> list[tuple[str, Predicate]]:
    """The LLaMA rules, in order: output head, ``nn.Embedding``, vectors (ndim < 2), hidden."""
    return [
        ("output", lambda model, module, name, p: module is _output_head(model) and p.ndim >= 2),
        ("embedding", lambda model, module, name, p: isinstance(module, nn.Embedding)),
        ("vector", lambda model, module, name, p: p.ndim < 2),
        ("hidden", lambda model, module, name, p: p.ndim >= 2 and isinstance(module, nn.Linear)),
    ]


def assign_roles(model: nn.Module, rules=None) -> dict[str, str]:
    """``{parameter name: role}`` for every parameter of ``model`` (see the module docstring)."""
    rules = default_rules() if rules is None else rules
    roles: dict[int, tuple[str, str]] = {}
    used = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{module_name}.{pname}" if module_name else pname
            role = next((r for r, pred in rules if pred(model, module, name, p)), None)
            if role is None:
                raise RoleError(f"parameter {name} {tuple(p.shape)} of a {type(module).__name__} "
                                "matches no role rule: the default rules know nn.Linear, "
                                "nn.Embedding and vectors, and do not guess another layer's "
                                "fan-in axis; add a rule for it")
            used.add(role)
            if id(p) in roles and roles[id(p)][1] != role:
                other = roles[id(p)][0]
                raise RoleError(f"{name} and {other} are the same tensor (tied weights) but get "
                                f"roles {role!r} and {roles[id(p)][1]!r}; untie them "
                                "(tie_word_embeddings=False)")
            roles.setdefault(id(p), (name, role))
    unused = [r for r, _ in rules if r not in used]
    if unused:
        raise RoleError(f"role rule(s) {unused} matched no parameter of {type(model).__name__}")
    return {name: role for name, role in roles.values()}


def fan_in_axis(model: nn.Module, name: str) -> int | None:
    """The axis SCALE normalizes over for parameter ``name`` (None for vectors)."""
    module_name, _, _ = name.rpartition(".")
    module = model.get_submodule(module_name)
    param = model.get_parameter(name)
    if param.ndim < 2:
        return None
    return 0 if isinstance(module, nn.Embedding) else 1


def params_by_role(model: nn.Module, rules=None) -> dict[str, list[tuple[str, torch.Tensor]]]:
    """Parameters grouped by role, in model order: ``{role: [(name, param), ...]}``."""
    roles = assign_roles(model, rules)
    named = dict(model.named_parameters())
    grouped: dict[str, list] = {r: [] for r in ROLES}
    for name, role in roles.items():
        grouped.setdefault(role, []).append((name, named[name]))
    return grouped
