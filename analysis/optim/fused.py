"""The fused step: the readable chains' rules compiled so that each row of a matrix is read
from memory once instead of twice (SCALE, arXiv 2506.16659, needs a row's RMS before it can
update the row).

Passes over a matrix's elements: SGD reads ``g`` and ``p`` and writes ``p`` (3). The readable
path (``ChainedOptimizer._apply``) reads ``g`` once more for the row norms (4), and the output
layer's ``m <- beta m + (1 - beta) g; p <- p - lr m / rms_row(m)`` costs 7. A kernel that
reduces a row while it is still in cache costs 3 on the hidden matrices and 5 on the output
layer (the embedding's column norms stay at 4: every row is read before any is updated). On the
CPU, contiguous matrices take small C++ kernels (``analysis.optim.cpu_kernels``, built on first
use); elsewhere (CUDA, other shapes) ``torch.compile`` writes the kernel from the plain
functions below (Triton on CUDA, Inductor's outer-loop fusion on CPU). The rules fused are
listed in ``fusable``; everything else (FSDP2 shards, non-float32 parameters, any other chain,
steps whose directions a tap hook records) runs the readable path. Both compute the same
expressions in float32 with a different rounding order; a test holds them to 1e-6 relative over
several steps.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

import analysis.optim.cpu_kernels as cpu_kernels
from analysis.optim.maths import RMS_FLOOR
from analysis.optim.sharding import any_dtensor
from analysis.optim.transforms import Transform, chain, momentum, normalize, scale_by_adam, tap


@dataclass(frozen=True)
class FusedRule:
    """What ``fusable`` found. ``kind`` names the rule in the project's one vocabulary (a *unit*
    is an output unit, whose fan-in the paper's column normalization scales to unit RMS):
    "per_unit" (fan-in on torch dim 1, a Linear's rows: the hidden matrices), "per_unit_dim0"
    (fan-in on dim 0: the embedding), "momentum_per_unit" (EMA momentum, then per unit: the
    output layer) or "adam" (the vectors)."""

    kind: str
    beta: float = 0.0  # momentum's beta
    buffer: str | None = None  # the state key of the momentum buffer
    adam: scale_by_adam | None = None
    adam_prefix: str = ""  # where the chain keeps Adam's state keys


def fusable(transform: Transform) -> FusedRule | None:
    """The fused rule equal to ``transform``, or None when it has none (readable path).

    - ``normalize(dim=1)``: ``p <- p (1 - lr wd) - lr g / max(rms_row(g), 1e-8)`` (hidden);
    - ``normalize(dim=0)``: the same with column RMS (the embedding): the column sums need the
      whole matrix read before any row is updated, so the floor is 4 passes (compiled, only
      the reduction: ``_dim0_sum_of_squares``; the update is the readable one);
    - ``momentum(beta) -> normalize(dim=1)``, EMA without Nesterov: the output layer's rule, on
      the same ``"{i}.momentum.buf"`` state the chain keeps (a checkpoint does not know which
      path wrote it);
    - ``adam`` on the vectors (both eps placements, a group's step counts equal): the readable
      operations once per group instead of per vector: one C++ call on the CPU, elsewhere
      ``torch._foreach_*`` (not compiled: a kernel per tiny vector costs more in thread
      start-up than it saves).

    ``tap`` links are allowed. lr and the bias corrections are 0-d tensors, so a changing lr
    does not recompile; past Dynamo's recompile limit the same functions run uncompiled, equal
    and slower.
    """
    links = list(transform.transforms) if isinstance(transform, chain) else [transform]
    prefix = transform._prefix if isinstance(transform, chain) else (lambda i, t: "")
    core = [(i, t) for i, t in enumerate(links) if not isinstance(t, tap)]
    kinds = [type(t) for _, t in core]
    if kinds == [normalize] and core[0][1].axis in (0, 1):
        return FusedRule("per_unit" if core[0][1].axis == 1 else "per_unit_dim0")
    if kinds == [momentum, normalize] and core[1][1].axis == 1:
        (i, m), _ = core
        if m.kind == "ema" and not m.nesterov:
            return FusedRule("momentum_per_unit", beta=m.beta, buffer=prefix(i, m) + "buf")
    if kinds == [scale_by_adam]:
        i, adam = core[0]
        return FusedRule("adam", adam=adam, adam_prefix=prefix(i, adam))
    return None


def _per_unit(params: list[Tensor], grads: list[Tensor], lr: Tensor, decay: Tensor) -> None:
    """``p <- p decay - lr g / max(rms_row(g), floor)`` for each matrix."""
    for p, g in zip(params, grads):
        scale = (g * g).mean(dim=1, keepdim=True).sqrt().clamp_min(RMS_FLOOR).reciprocal()
        p.mul_(decay).sub_(g * scale * lr)


COL_BLOCK = 32  # rows per block of the column reduction (measured: 32 beats 64..256)


def _dim0_sum_of_squares(g: Tensor) -> Tensor:
    """``sum(g**2, dim=0, keepdim=True)`` as blocks of ``COL_BLOCK`` rows, then the blocks.
    Compiled, a block is one cache-sized outer reduction that Inductor vectorizes along the
    row; one outer reduction over the whole height walks memory a row apart and ran 2x
    slower than the readable path's chunked one (32000 x 512: 3.6 ms blocked, 6.8 chunked)."""
    whole = g.shape[0] - g.shape[0] % COL_BLOCK
    head, tail = g[:whole], g[whole:]
    blocks = (head * head).view(-1, COL_BLOCK, g.shape[1]).sum(1).sum(0, keepdim=True)
    return blocks + (tail * tail).sum(0, keepdim=True)


def _per_unit_dim0(params: list[Tensor], grads: list[Tensor], lr: float, decay: float) -> None:
    """``p <- p decay - lr g / max(rms_col(g), floor)``: the compiled column reduction, then
    the readable path's update (``ChainedOptimizer._apply``: compiling it saves no pass)."""
    for p, g in zip(params, grads):
        scale = _compiled("dim0_sums")(g).div_(g.shape[0]).sqrt_().clamp_min_(RMS_FLOOR).reciprocal_()
        if decay != 1.0:
            p.mul_(decay)
        p.addcmul_(g, scale, value=-lr)


def _momentum_per_unit(
    params: list[Tensor], grads: list[Tensor], buffers: list[Tensor], beta: float, lr: Tensor, decay: Tensor
) -> None:
    """``m <- beta m + (1 - beta) g``; ``p <- p decay - lr m / max(rms_row(m), floor)``."""
    for p, g, m in zip(params, grads, buffers):
        m.lerp_(g, 1.0 - beta)
        scale = (m * m).mean(dim=1, keepdim=True).sqrt().clamp_min(RMS_FLOOR).reciprocal()
        p.mul_(decay).sub_(m * scale * lr)


def _adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    adam: scale_by_adam,
    t: int,
    lr: float,
    decay: float,
) -> None:
    """``scale_by_adam``'s step ``t`` on every vector at once (``torch._foreach_*``: the same
    operations in the same order, one call per operation for the whole group)."""
    b1, b2 = adam.betas
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - b1)
    torch._foreach_mul_(exp_avg_sqs, b2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - b2)
    if adam.eps_on == "raw":
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, adam.eps)
        updates = torch._foreach_div(exp_avgs, denom)
        torch._foreach_mul_(updates, math.sqrt(1 - b2**t) / (1 - b1**t))
    else:
        denom = torch._foreach_div(exp_avg_sqs, 1 - b2**t)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, adam.eps)
        updates = torch._foreach_div(exp_avgs, 1 - b1**t)
        torch._foreach_div_(updates, denom)
    if decay != 1.0:
        torch._foreach_mul_(params, decay)
    torch._foreach_add_(params, updates, alpha=-lr)


_COMPILED: dict[str, object] = {}


def _compiled(name: str):
    if name not in _COMPILED:
        function = {
            "per_unit": _per_unit,
            "dim0_sums": _dim0_sum_of_squares,
            "momentum_per_unit": _momentum_per_unit,
        }[name]
        _COMPILED[name] = torch.compile(function, dynamic=False)
    return _COMPILED[name]


@contextlib.contextmanager
def _outer_loop_fusion_guard():
    """Work around pytorch/pytorch#196570 while Inductor compiles.

    Inductor (torch 2.13, CPU) stops with ``KeyError: 'bufN'`` on the output layer's rule: its
    outer-loop fusion asks every user of a buffer for its read of that buffer, and a buffer
    written in place (the momentum) is read under another name. Here that question is answered
    with "no read" for such a user, which makes the buffer ineligible for the local-buffer
    rewrite: the behaviour of the proposed fix (pytorch/pytorch#196639); the one caller of that
    method is that check."""
    try:
        from torch._inductor.loop_body import LoopBody
    except ImportError:  # a torch without Inductor's loop bodies has nothing to work around
        yield
        return
    original = LoopBody.get_read_expr

    def read_or_none(self, buffer_name):
        try:
            return original(self, buffer_name)
        except KeyError:  # read under the mutated buffer's name: not eligible
            return None

    LoopBody.get_read_expr = read_or_none
    try:
        yield
    finally:
        LoopBody.get_read_expr = original


def can_fuse(params: list[Tensor]) -> bool:
    """Plain (not FSDP2-sharded) float32 tensors on one device, every one with a gradient.
    (Asked every step of every group: one loop, the device and the dtype looked up once.)"""
    if not params or any_dtensor(params):  # a user may shard some modules and not others
        return False
    device, f32 = params[0].device, torch.float32
    for p in params:
        g = p.grad
        if g is None or p.dtype is not f32 or g.dtype is not f32 or p.device != device:
            return False
    return True


def step(rule: FusedRule, params: list[Tensor], states: list[dict], lr: float, weight_decay: float) -> None:
    """One fused step of ``rule`` over ``params`` (``can_fuse``) with their (initialised)
    ``states``; the same update as the readable path (module docstring)."""
    grads = [p.grad for p in params]
    if rule.kind == "adam":
        key = rule.adam_prefix
        t = states[0][key + "step"] + 1
        for state in states:
            state[key + "step"] = t
        moments = ([s[key + "exp_avg"] for s in states], [s[key + "exp_avg_sq"] for s in states])
        if params[0].device.type == "cpu" and all(_contiguous(p) for p in params):
            ops = _cpu_kernels()
            ops.adam_step(
                params,
                grads,
                *moments,
                *rule.adam.betas,
                rule.adam.eps,
                rule.adam.eps_on == "raw",
                t,
                lr,
                1.0 - lr * weight_decay,
            )
            increment_version([*params, *moments[0], *moments[1]])  # see _cpu_step
        else:
            _adam([p.detach() for p in params], grads, *moments, rule.adam, t, lr, 1.0 - lr * weight_decay)
        return
    if params[0].device.type == "cpu" and all(_plain_matrix(p, g) for p, g in zip(params, grads)):
        # the weights as they are: a C++ op under no_grad writes a leaf without detach()
        _cpu_step(rule, params, grads, states, lr, 1.0 - lr * weight_decay)
        return
    weights = [p.detach() for p in params]
    # 0-d tensors, not Python floats: a scheduler's new lr must not recompile
    device = params[0].device
    lr_t = torch.tensor(lr, dtype=torch.float32, device=device)
    decay = torch.tensor(1.0 - lr * weight_decay, dtype=torch.float32, device=device)
    try:
        with _outer_loop_fusion_guard():
            if rule.kind == "per_unit":
                _compiled("per_unit")(weights, grads, lr_t, decay)
            elif rule.kind == "per_unit_dim0":
                _per_unit_dim0(weights, grads, lr, 1.0 - lr * weight_decay)
            else:
                buffers = [state[rule.buffer] for state in states]
                _compiled("momentum_per_unit")(weights, grads, buffers, rule.beta, lr_t, decay)
    except torch._dynamo.exc.BackendCompilerFailed as error:  # e.g. no C++ compiler
        inner = getattr(error, "inner_exception", error)
        cause = f"{type(inner).__name__}: {str(inner).strip().splitlines()[0] if str(inner).strip() else ''}"
        raise _cannot_compile(cause) from error


def _cannot_compile(cause: str) -> RuntimeError:
    """The one line a fused step that cannot be built or compiled stops with."""
    return RuntimeError(
        f"the fused optimizer step could not be compiled ({cause}); build the "
        "optimizer with fused=False, or train without --compile"
    )


def _contiguous(p: Tensor) -> bool:
    return p.is_contiguous() and p.grad.is_contiguous()


def _plain_matrix(p: Tensor, g: Tensor) -> bool:
    """What the CPU kernels' matrix rules take: a contiguous matrix, a contiguous gradient."""
    return p.ndim == 2 and p.is_contiguous() and g.is_contiguous()


def _cpu_kernels():
    """``cpu_kernels.kernels()``, or the one-line error that names the way around a failed build."""
    try:
        return cpu_kernels.kernels()
    except cpu_kernels.KernelBuildError as error:
        raise _cannot_compile(str(error)) from error


def _cpu_step(
    rule: FusedRule, weights: list[Tensor], grads: list[Tensor], states: list[dict], lr: float, decay: float
) -> None:
    """The rule on the CPU with ``analysis.optim.cpu_kernels`` (the same math as ``_per_unit``,
    ``_per_unit_dim0`` and ``_momentum_per_unit``, each matrix read as few times as that math allows)."""
    ops = _cpu_kernels()
    buffers = [state[rule.buffer] for state in states] if rule.kind == "momentum_per_unit" else []
    if rule.kind == "momentum_per_unit":
        for p, g, m in zip(weights, grads, buffers):
            ops.momentum_per_unit_step(p, g, m, rule.beta, lr, decay, RMS_FLOOR)
    elif rule.kind == "per_unit":  # one call for the group: one parallel loop over all its rows
        ops.per_unit_step(weights, grads, lr, decay, RMS_FLOOR)
    else:
        for p, g in zip(weights, grads):
            ops.per_unit_dim0_step(p, g, lr, decay, RMS_FLOOR)
    # the kernels write through data pointers, which autograd does not see: without this, a
    # backward through a graph that saved these weights before the step would not stop (as
    # torch's in-place ops make it) but compute gradients from the new weights
    increment_version([*weights, *buffers])


def adam_steps_agree(rule: FusedRule, states: list[dict]) -> bool:
    """Adam's bias correction is per parameter; the fused step needs one count per group."""
    if rule.kind != "adam":
        return True
    key = rule.adam_prefix + "step"
    return len({state[key] for state in states}) == 1


def step_path(optimizer) -> str:
    """ "fused" when some group of ``optimizer`` (or of its inner optimizers) takes a fused rule,
    else "readable" (a recipe with no fused rule, or ``fused=False``)."""
    for inner in getattr(optimizer, "optimizers", [optimizer]):
        if getattr(inner, "fused", False) and any(
            fusable(inner.transform_of(group)) is not None for group in inner.param_groups
        ):
            return "fused"
    return "readable"
