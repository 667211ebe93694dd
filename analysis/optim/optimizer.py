"""One ``torch.optim.Optimizer`` that applies a transform per parameter group, and one that
joins several optimizers into a single object.

``ChainedOptimizer`` owns the step: for every parameter ``p`` with gradient ``g`` in a group
with transform ``T``, learning rate ``lr`` and weight decay ``wd``::

    u = T.update(g, state[p], p)
    p <- p * (1 - lr * wd)      (decoupled weight decay)
    p <- p - lr * u

Transforms are held on the optimizer (not in the group dicts) so the groups stay plain
serialisable dicts; LR schedulers, ``state_dict``/``load_state_dict``, step hooks and HF
``Trainer(optimizers=...)`` work because this is an ordinary ``torch.optim.Optimizer``.

Under FSDP2 a parameter is a ``DTensor`` row block: the state is created from the ``DTensor``
(so sharded checkpointing sees it), and the transform runs on the local blocks of gradient,
state and parameter, or, when it needs the whole matrix, on the gathered matrix with this
process's rows kept (``analysis.optim.sharding``); ``check_shardable`` refuses the optimizers
that step whole matrices themselves.

Taps (``analysis.optim.transforms.tap``) report intermediate directions to the listeners
registered on *this* optimizer with ``register_tap_hook``; two instrumented optimizers never
see each other's taps.

``fused=True`` runs the groups whose rule has a compiled equivalent (``analysis.optim.fused``:
SCALE's row-normalized matrices, its output layer, Adam on vectors) as one compiled function
per group, the same update in fewer passes over memory; the other groups, and every step on
which a tap hook wants the directions, take the readable path above.

``PartitionedOptimizer`` is for recipes that pair a library optimizer with AdamW on the
other parameters (Muon, GaLore, ...): its ``param_groups`` are the very dicts of the inner
optimizers, so a scheduler that edits ``lr`` edits theirs.
"""

from __future__ import annotations

import collections.abc
from collections.abc import Callable

import torch
from torch.utils.hooks import RemovableHandle

import analysis.optim.fused as fused_step  # the module itself, not through the package's __init__
from analysis.optim.inspection import describe
from analysis.optim.sharding import local, whole_matrix_update
from analysis.optim.transforms import PerLayout, Scaled, Transform, tap_listener

TapHook = Callable[[str, torch.Tensor, torch.Tensor], None]


def _run_closure(closure):
    """torch's step protocol: evaluate ``closure`` with gradients on (None without one)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class NotShardable(ValueError):
    """An optimizer whose rule needs whole matrices was asked to run on FSDP2 row shards."""


class LocalState(collections.abc.MutableMapping):
    """A parameter's state seen through ``local``: ``DTensor`` values read as this process's
    block (views, so in-place updates land in the state); plain values (step counts) read and
    write through unchanged."""

    def __init__(self, state: dict):
        self.state = state

    def __getitem__(self, key):
        return local(self.state[key])

    def __setitem__(self, key, value):
        self.state[key] = value

    def __delitem__(self, key):
        del self.state[key]

    def __iter__(self):
        return iter(self.state)

    def __len__(self):
        return len(self.state)


class ChainedOptimizer(torch.optim.Optimizer):
    """Apply ``transforms[group["label"]]`` to each group's gradients, then the decoupled step."""

    def __init__(self, param_groups: list[dict], transforms: dict[str, Transform], fused: bool = False):
        for group in param_groups:
            label = group.get("label")
            if label not in transforms:
                raise ValueError(
                    f"param group {label!r} has no transform; known labels: {sorted(transforms)}"
                )
            lr, wd = group.get("lr"), group.get("weight_decay", 0.0)
            if lr is None or not lr >= 0.0:
                raise ValueError(f"learning rate must be >= 0, got {lr} for group {label!r}")
            if not wd >= 0.0:
                raise ValueError(f"weight_decay must be >= 0, got {wd} for group {label!r}")
        self.transforms = dict(transforms)
        self._tap_hooks: dict[int, TapHook] = collections.OrderedDict()  # weakref-able, as torch's hooks
        self._tap_wanted: dict[int, Callable[[], bool]] = collections.OrderedDict()
        self.fused = fused
        super().__init__(param_groups, {"weight_decay": 0.0})

    def register_tap_hook(self, hook: TapHook, wanted: Callable[[], bool] | None = None) -> RemovableHandle:
        """Call ``hook(label, direction, param)`` for every ``tap`` this optimizer's transforms
        pass during ``step``; ``handle.remove()`` stops it. Without hooks taps cost nothing.
        ``wanted()``, asked before each step, says whether the hook needs this step's
        directions (default: every step); a fused optimizer takes the readable path on those
        steps only, and a hook that does not want a step is not called."""
        handle = RemovableHandle(self._tap_hooks, extra_dict=self._tap_wanted)
        self._tap_hooks[handle.id] = hook
        self._tap_wanted[handle.id] = wanted or (lambda: True)
        return handle

    def _wanting_hooks(self) -> list[TapHook]:
        """The tap hooks that want this step's directions."""
        return [hook for key, hook in list(self._tap_hooks.items()) if self._tap_wanted[key]()]

    def describe(self) -> str:
        """The group table (see the module-level ``describe``)."""
        return describe(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, keeping each group's ``"fan_in"``: the axes are the model's layout, not
        saved state (a checkpoint from before they were kept has none)."""
        layouts = [group.get("fan_in") for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, fan_in in zip(self.param_groups, layouts):
            if fan_in is not None:
                group["fan_in"] = fan_in

    def transform_of(self, group: dict) -> Transform:
        """The transform of ``group``: by its label, at its ``"fan_in"`` for a ``PerLayout``."""
        transform = self.transforms[group["label"]]
        if isinstance(transform, PerLayout):
            if "fan_in" not in group:
                raise ValueError(
                    f"param group {group['label']!r} has a per-layout transform "
                    "but no 'fan_in' axes; build the groups with "
                    "analysis.optim.hyper.role_groups"
                )
            return transform.at(group["fan_in"])
        return transform

    @torch.no_grad()
    def step(self, closure=None):
        loss = _run_closure(closure)
        self._refuse_sparse_gradients()
        hooks = self._wanting_hooks() if self._tap_hooks else []
        if not hooks:
            self._apply(fusing=self.fused)
            return loss

        def dispatch(label, direction, param):
            for hook in hooks:
                hook(label, direction, param)

        with tap_listener(dispatch):  # taps wanted: every group on its readable path
            self._apply(fusing=False)
        return loss

    def _refuse_sparse_gradients(self) -> None:
        """A sparse gradient (``nn.Embedding(sparse=True)``) is refused before any weight moves,
        as torch's AdamW refuses it, not halfway through the step inside a rule."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.layout != torch.strided:
                    raise RuntimeError(
                        f"group {group['label']!r}: a parameter of shape {tuple(p.shape)} has a "
                        f"{str(p.grad.layout).removeprefix('torch.')} gradient, and this optimizer "
                        "needs dense ones; build the layer with sparse=False (nn.Embedding's "
                        "default)"
                    )

    def _apply(self, fusing: bool = False):
        for group in self.param_groups:
            transform = self.transform_of(group)
            lr, wd = group["lr"], group["weight_decay"]
            if fusing and self._fused_group(group, transform):
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_of(p, transform)
                if p is local(p):
                    direction = transform.update(p.grad, state, p)
                elif transform.row_shard_safe:  # an FSDP2 shard: the rule runs on this process's rows
                    direction = transform.update(local(p.grad), LocalState(state), p)
                else:  # a whole-matrix rule on an FSDP2 shard: gathered, run once, rows kept
                    direction = whole_matrix_update(transform, p, state)
                target = local(p)
                if wd != 0.0:
                    target.mul_(1.0 - lr * wd)
                if isinstance(direction, Scaled):  # normalize: one fused in-place update
                    target.addcmul_(direction.base.to(p.dtype), direction.scale.to(p.dtype), value=-lr)
                else:
                    target.add_(direction.to(p.dtype), alpha=-lr)

    def _state_of(self, p, transform: Transform) -> dict:
        """``p``'s state, made by ``transform.init`` at its first step."""
        state = self.state[p]
        if not state:
            state.update(transform.init(p))
        return state

    def _fused_group(self, group: dict, transform: Transform) -> bool:
        """Step ``group`` with its fused rule if it has one and can (``analysis.optim.fused``);
        False: nothing was done, take the readable path."""
        rule = fused_step.fusable(transform)
        params = [p for p in group["params"] if p.grad is not None]
        if rule is None or not fused_step.can_fuse(params):
            return False
        if rule.kind in (
            "per_unit",
            "per_unit_dim0",
        ):  # stateless: the entry the readable path makes, no init
            states = [self.state[p] for p in params]
        else:
            states = [self._state_of(p, transform) for p in params]
        if not fused_step.adam_steps_agree(rule, states):
            return False
        fused_step.step(rule, params, states, group["lr"], group["weight_decay"])
        return True


class MergedState(collections.abc.Mapping):
    """Read-only union of the inner optimizers' ``state`` dicts.

    (``collections.ChainMap`` would not do: looking a key up in an inner ``defaultdict``
    that lacks it creates an empty entry instead of falling through.)
    """

    def __init__(self, states):
        self.states = list(states)

    def __getitem__(self, key):
        for state in self.states:
            if key in state:
                return state[key]
        raise KeyError(key)

    def __iter__(self):
        for state in self.states:
            yield from state

    def __len__(self):
        return sum(len(state) for state in self.states)


class PartitionedOptimizer(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters, driven as one.

    ``param_groups`` are the inner optimizers' own group dicts (shared, not copied); ``state``
    is a read view over the inner states; ``state_dict`` holds one entry per inner optimizer.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        groups = [g for opt in self.optimizers for g in opt.param_groups]
        super().__init__(groups, {})
        self.share_inner_groups()  # Optimizer.__init__ re-adds the dicts: share the inner ones

    def describe(self) -> str:
        """The group table of every inner optimizer (see the module-level ``describe``)."""
        return describe(self)

    def register_tap_hook(self, hook: TapHook, wanted: Callable[[], bool] | None = None) -> _Handles:
        """``register_tap_hook`` on every inner optimizer that has taps; one handle for all."""
        return _Handles(
            [
                opt.register_tap_hook(hook, wanted)
                for opt in self.optimizers
                if hasattr(opt, "register_tap_hook")
            ]
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = _run_closure(closure)
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"partitioned": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict):
        inner = state_dict.get("partitioned")
        if inner is None or len(inner) != len(self.optimizers):
            raise ValueError(
                "optimizer state was saved by a different recipe "
                f"(expected {len(self.optimizers)} partitions)"
            )
        for opt, sd in zip(self.optimizers, inner):
            opt.load_state_dict(sd)
        self.share_inner_groups()

    def share_inner_groups(self) -> None:
        """Take the inner optimizers' group dicts (and a view of their state) as this one's: at
        construction, and after their state was loaded, since torch's ``load_state_dict`` gives
        each new dicts and an lr scheduler stepping this optimizer would otherwise move dicts
        nothing reads any more."""
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]
        self.state = MergedState(opt.state for opt in self.optimizers)


class _Handles:
    """Several ``RemovableHandle`` removed as one."""

    def __init__(self, handles):
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


# what steps FSDP2 row shards correctly: the chains (whole-matrix rules gathered), elementwise
# torch optimizers, and Muon (its DTensor matmuls gather)
STEPS_ROW_SHARDS = (ChainedOptimizer, torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD, torch.optim.Muon)


def check_shardable(optimizer: torch.optim.Optimizer, name: str) -> None:
    """Refuse (``NotShardable``) an optimizer that cannot step FSDP2 row shards correctly.

    A ``ChainedOptimizer`` can: its row-local transforms run on the shards and the others on
    the gathered matrix (``sharding.whole_matrix_update``). Of the library optimizers the
    elementwise ``torch.optim`` ones can, and ``torch.optim.Muon``, whose Newton-Schulz
    matmuls on ``DTensor`` gather what they need (a test holds it equal to DDP); the others
    (Adafactor's factored moments, pytorch-optimizer's projections) would apply a whole-matrix
    rule to a block of rows. ``name`` is the recipe's name."""
    problems = [
        type(opt).__name__
        for opt in getattr(optimizer, "optimizers", [optimizer])
        if not isinstance(opt, STEPS_ROW_SHARDS)
    ]
    if problems:
        raise NotShardable(
            f"optimizer {name!r} needs whole matrices ({'; '.join(problems)} steps "
            "them itself), which FSDP2 splits across processes by rows; run it with "
            "--parallel ddp"
        )


def whole_matrix_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters FSDP2 steps as gathered whole matrices: those of a ``ChainedOptimizer``
    group whose rule is not row-local, and every ``torch.optim.Muon`` parameter."""
    found = []
    for opt in getattr(optimizer, "optimizers", [optimizer]):
        if isinstance(opt, ChainedOptimizer):
            found += [
                p for g in opt.param_groups if not opt.transform_of(g).row_shard_safe for p in g["params"]
            ]
        elif isinstance(opt, torch.optim.Muon):
            found += [p for g in opt.param_groups for p in g["params"]]
    return found
