"""Label every parameter of a model with its role and fan-in axes, from module types.

Roles:

- ``output``: the weight of the model's output head (``model.get_output_embeddings()``);
- ``embedding``: the weight of an ``nn.Embedding``;
- ``vector``: any parameter with fewer than 2 dims (norm gains, biases);
- ``hidden``: every other matrix of a layer whose fan-in axis is known.

A mixture of experts' matrices are hidden matrices with a ``part`` of their own: the router
(transformers' ``*Router`` modules, a ``(experts, d)`` weight read as ``x W^T``: one output unit
per expert logit) is part ``"router"``, and the stacked experts (transformers' expert modules,
``(experts, out, in)`` weights each read as ``x W_e^T``) part ``"experts"``, normalized per
expert and output unit. The optimizer updates them by their role; the advisor and its tables
read the part, so the router can be placed and costed as a role of its own.

The fan-in axes are the axes SCALE normalizes over ("one scale per output unit", arXiv
2506.16659), a property of the layer type, never guessed from a shape:

==================================  =======================  ===========
layer                               weight stored as         fan-in axes
==================================  =======================  ===========
``nn.Linear``                       ``(out, in)``            ``1``
``nn.Embedding``                    ``(vocab, d)``: a linear ``0``
                                    map of a one-hot input
transformers' ``Conv1D`` (GPT-2)    ``(in, out)``            ``0``
``nn.Conv1d/2d/3d``                 ``(out, in, *kernel)``   ``(1, 2, ...)``
a transformers MoE router           ``(experts, in)``        ``1``
transformers' stacked experts       ``(experts, out, in)``   ``2``
==================================  =======================  ===========

A matrix of any other layer (``nn.MultiheadAttention``'s packed projection, a custom layer)
is refused with its type named, unless a rule gives its fan-in (``by_type(..., fan_in=1)``).

Rules are ordered ``Rule``s, first match wins: a user's rules go before ``default_rules()``
(``by_name("output", "head.weight")`` names the output layer of a model without
``get_output_embeddings``). ``assign`` raises ``RoleError`` when a parameter matches no rule,
when a user's rule matches nothing (a typo guard), or when one tensor is reached under two
roles: tied embedding and head weights, which SCALE treats differently. ``tied("output")``
(or ``"embedding"``) is the explicit choice for a tied model: the shared tensor gets that
role and that layer's fan-in axis.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from analysis.optim.maths import axes

ROLES = ("embedding", "hidden", "output", "vector")
Predicate = Callable[[nn.Module, nn.Module, str, torch.Tensor], bool]
FanIn = tuple[int, ...]


class RoleError(ValueError):
    """A parameter without a role or fan-in, a rule that matches nothing, or tied weights."""


@dataclass(frozen=True)
class Rule:
    """Parameters ``match(model, module, name, param)`` selects get ``role``; ``fan_in``
    overrides the layer type's axes (``None``: from the table above). ``text`` says what the
    rule matches (messages and ``Layout.table``); ``user``: checked for matching something."""

    role: str
    match: Predicate
    fan_in: FanIn | None = None
    text: str = ""
    user: bool = True
    resolves_tie: bool = False
    part: str = ""


def by_type(role: str, *types: type, fan_in: int | FanIn | None = None) -> Rule:
    """Matrices of modules of ``types`` (vectors are left to the vector rule)."""
    names = ", ".join(t.__name__ for t in types)
    return Rule(
        role,
        lambda model, module, name, p: isinstance(module, types) and p.ndim >= 2,
        None if fan_in is None else axes(fan_in),
        f"type {names}",
    )


def by_name(role: str, *patterns: str, fan_in: int | FanIn | None = None) -> Rule:
    """Parameters whose full name matches one of the glob ``patterns`` (``"head.weight"``,
    ``"*.attn.c_proj.weight"``)."""
    return Rule(
        role,
        lambda model, module, name, p: any(fnmatch.fnmatchcase(name, pat) for pat in patterns),
        None if fan_in is None else axes(fan_in),
        f"name {' | '.join(patterns)}",
    )


def tied(role: str) -> Rule:
    """The explicit choice for tied input/output weights: the shared tensor takes ``role``
    (``"output"``: normalized per vocabulary entry like a head; ``"embedding"``: per model
    dimension like an input table)."""
    if role not in ("output", "embedding"):
        raise RoleError(f"tied({role!r}): a tied tensor is the 'output' or the 'embedding'")
    return Rule(role, lambda *a: False, None, f"tied weights as {role}", user=False, resolves_tie=True)


def _output_head(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2's projections), recognised without importing it."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def layer_fan_in(module: nn.Module, p: torch.Tensor) -> FanIn | None:
    """The fan-in axes of matrix ``p`` of ``module`` from its layer type; None if unknown."""
    if isinstance(module, (nn.Linear, nn.Bilinear)) and p.ndim == 2:
        return (1,)
    if isinstance(module, nn.Embedding) or _is_conv1d(module):
        return (0,)
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        return tuple(range(1, p.ndim))
    return None


def _is_moe_router(module: nn.Module) -> bool:
    """A transformers mixture-of-experts router (``MixtralTopKRouter``, ``DeepseekV3TopkRouter``,
    ...): a module of its own holding the ``(experts, d)`` weight it applies as ``F.linear``."""
    cls = type(module)
    return "Router" in cls.__name__ and cls.__module__.startswith("transformers")


def _is_stacked_experts(module: nn.Module) -> bool:
    """transformers' stacked experts (``MixtralExperts`` and the others its
    ``use_experts_implementation`` makes) in the ``(experts, out, in)`` layout; a transposed
    ``(experts, in, out)`` one (GPT-OSS) is left to a rule."""
    cls = type(module)
    return cls.__module__.startswith("transformers") and getattr(module, "is_transposed", None) is False


def fan_out(fan_in: FanIn) -> FanIn:
    """The output-unit axes of a matrix with fan-in axes ``fan_in``, for every layer in the
    table: the other axis of a 2-D weight; a convolution's axis 0 (its output channels); the
    output axis 1 of stacked ``(experts, out, in)`` matrices (axis 0 is the stack)."""
    return (1,) if fan_in in ((0,), (2,)) else (0,)


def default_rules() -> list[Rule]:
    """The rules for LLaMA-like models, in order: output head, ``nn.Embedding``, vectors
    (ndim < 2), a mixture of experts' router and stacked experts, hidden (any matrix of a known
    layer type)."""
    return [
        Rule(
            "output",
            lambda model, module, name, p: module is _output_head(model) and p.ndim >= 2,
            text="get_output_embeddings()",
            user=False,
        ),
        Rule(
            "embedding",
            lambda model, module, name, p: isinstance(module, nn.Embedding),
            text="type Embedding",
            user=False,
        ),
        Rule("vector", lambda model, module, name, p: p.ndim < 2, text="ndim < 2", user=False),
        Rule(
            "hidden",
            lambda model, module, name, p: _is_moe_router(module) and p.ndim == 2,
            fan_in=(1,),
            text="MoE router",
            user=False,
            part="router",
        ),
        Rule(
            "hidden",
            lambda model, module, name, p: _is_stacked_experts(module) and p.ndim == 3,
            fan_in=(2,),
            text="MoE stacked experts",
            user=False,
            part="experts",
        ),
        Rule(
            "hidden",
            lambda model, module, name, p: p.ndim >= 2 and layer_fan_in(module, p) is not None,
            text="Linear, Conv1D, Conv*d",
            user=False,
        ),
    ]


@dataclass(frozen=True)
class ParamLayout:
    """One parameter's role, fan-in axes (None for vectors), layer type, deciding rule, and
    ``part`` (``"router"``, ``"experts"``; ``""`` when the role says all)."""

    name: str
    role: str
    fan_in: FanIn | None
    layer: str
    rule: str
    param: torch.Tensor = field(repr=False, compare=False)
    part: str = ""

    @property
    def kind(self) -> str:
        """The part where there is one, else the role: what the advisor groups as a role."""
        return self.part or self.role


@dataclass
class Layout:
    """Every parameter's ``ParamLayout``, in model order (``assign`` makes it)."""

    params: dict[str, ParamLayout]
    model: nn.Module | None = field(default=None, repr=False)

    def roles(self) -> dict[str, str]:
        return {n: p.role for n, p in self.params.items()}

    def by_role(self) -> dict[str, list[ParamLayout]]:
        """``{role: [ParamLayout, ...]}`` for every role of ``ROLES`` (and any other used)."""
        grouped: dict[str, list[ParamLayout]] = {r: [] for r in ROLES}
        for p in self.params.values():
            grouped.setdefault(p.role, []).append(p)
        return grouped

    def rows(self) -> list[dict]:
        """One row per parameter: name, shape, layer, role, fan-in axes, deciding rule."""
        return [
            {
                "parameter": p.name,
                "shape": tuple(p.param.shape),
                "layer": p.layer,
                "role": p.role,
                "part": p.part,
                "fan_in": p.fan_in,
                "rule": p.rule,
            }
            for p in self.params.values()
        ]

    def table(self) -> str:
        """``rows`` as text."""
        lines = [f"{'parameter':<40} {'shape':<16} {'layer':<12} {'role':<9} {'fan-in':<9} rule"]
        for r in self.rows():
            fan_in = "-" if r["fan_in"] is None else ",".join(map(str, r["fan_in"]))
            lines.append(
                f"{r['parameter']:<40} {str(r['shape']):<16} {r['layer']:<12} "
                f"{r['role']:<9} {fan_in:<9} {r['rule']}"
            )
        return "\n".join(lines)


def _as_rule(rule) -> Rule:
    """A ``Rule``, or an old-style ``(role, predicate)`` pair."""
    return rule if isinstance(rule, Rule) else Rule(rule[0], rule[1], text="custom")


def assign(model: nn.Module, rules=None) -> Layout:
    """The ``Layout`` of ``model`` under ``rules`` (a user's rules, then ``default_rules()``;
    see the module docstring). Raises ``RoleError``."""
    rules = [_as_rule(r) for r in (rules or [])]
    user_rules = [r for r in rules if not r.resolves_tie]
    tie = next((r for r in rules if r.resolves_tie), None)
    ordered = user_rules + [r for r in default_rules()]
    found: dict[int, ParamLayout] = {}
    used: set[int] = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{module_name}.{pname}" if module_name else pname
            index = next((i for i, r in enumerate(ordered) if r.match(model, module, name, p)), None)
            if index is None:
                raise RoleError(
                    f"parameter {name} {tuple(p.shape)} of a {type(module).__name__} "
                    "matches no role rule: the rules know nn.Linear, nn.Embedding, "
                    "transformers' Conv1D, nn.Conv*d and vectors, and do not guess "
                    "another layer's fan-in axis; add a rule, e.g. by_type('hidden', "
                    f"{type(module).__name__}, fan_in=1)"
                )
            rule = ordered[index]
            used.add(index)
            fan_in = None if p.ndim < 2 else rule.fan_in or layer_fan_in(module, p)
            if p.ndim >= 2 and fan_in is None:
                raise RoleError(
                    f"parameter {name} {tuple(p.shape)} of a {type(module).__name__} "
                    f"gets role {rule.role!r} from rule '{rule.text}' but its fan-in "
                    "axis is unknown; give it: fan_in=1 (torch rows) or fan_in=0"
                )
            entry = ParamLayout(name, rule.role, fan_in, type(module).__name__, rule.text, p, rule.part)
            previous = found.get(id(p))
            if previous is not None and previous.role != entry.role:
                if tie is None:
                    raise RoleError(
                        f"{name} and {previous.name} are the same tensor (tied "
                        f"weights) but get roles {entry.role!r} and "
                        f"{previous.role!r}; untie them (tie_word_embeddings=False) "
                        "or choose one role with rules=[tied('output')]"
                    )
                keep = entry if entry.role == tie.role else previous
                found[id(p)] = ParamLayout(previous.name, tie.role, keep.fan_in, keep.layer, tie.text, p)
            elif previous is None:
                found[id(p)] = entry
    unused = [r.text or r.role for i, r in enumerate(ordered) if r.user and i not in used]
    if unused:
        raise RoleError(f"rule(s) {unused} matched no parameter of {type(model).__name__}")
    return Layout({p.name: p for p in found.values()}, model)


def assign_roles(model: nn.Module, rules=None) -> dict[str, str]:
    """``{parameter name: role}`` for every parameter of ``model`` (see ``assign``)."""
    return assign(model, rules).roles()
