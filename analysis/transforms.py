"""Per-tensor update transforms: the small parts every optimizer here is built from.

A transform turns a gradient into an update direction, one tensor at a time::

    init(param)                 -> dict of state tensors (kept in optimizer.state[param])
    update(grad, state, param)  -> direction u  (the optimizer then does p <- p - lr * u)

State is explicit: a transform keeps nothing per parameter in attributes or closures, so
``state_dict`` round trips, checkpointing and instrumentation see everything. ``chain``
namespaces each child's keys by position and name (``"0.momentum.buf"``) so a saved state
reads like the recipe.

The tensor maths lives in plain functions (``rms_normalize``, ``newton_schulz``) that tests
and notebooks call directly.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from analysis.parallel import sharded_group

RMS_FLOOR = 1e-8
# Quintic Newton-Schulz coefficients used by Muon (Jordan et al. 2024; torch.optim.Muon).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

_tap_listener: Callable[[str, Tensor, Tensor], None] | None = None


def set_tap_listener(listener: Callable[[str, Tensor, Tensor], None] | None) -> None:
    """Route ``tap`` calls to ``listener(name, tensor, param)``; None turns taps off (free)."""
    global _tap_listener
    _tap_listener = listener


# ----------------------------------------------------------------------------- tensor maths

def sum_of_squares(x: Tensor, dim: int, dtype: torch.dtype | None = None,
                   rows_per_chunk: int = 1024) -> Tensor:
    """``sum(x**2, dim, keepdim=True)`` of a matrix, without a full-size temporary, accumulated
    in ``dtype`` (default: ``x``'s, at least float32).

    Along ``dim=1`` this is ``vector_norm(dim=1)**2``. Along ``dim=0`` of a row-major matrix,
    ``vector_norm(dim=0)`` is ~10x slower and ``square().sum(0)`` allocates a matrix-sized
    temporary (page faults on every step), so the rows are reduced in cache-sized chunks.
    The optimizers, the variance estimators and the row statistics all reduce through here.
    """
    dtype = dtype or torch.promote_types(x.dtype, torch.float32)  # bf16 sums in float32
    if dim in (1, -1) or x.ndim == 1:
        return torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=dtype).square_()
    acc = torch.zeros((1, *x.shape[1:]), dtype=dtype, device=x.device)
    for chunk in x.split(rows_per_chunk, dim=0):
        acc += chunk.to(dtype).square().sum(dim=0, keepdim=True)
    return acc


def inverse_rms(x: Tensor, dim: int, floor: float = RMS_FLOOR, param: Tensor | None = None) -> Tensor:
    """``1 / max(rms(x, dim), floor)`` with ``rms = sqrt(mean(x**2, dim))``, keepdim (at least
    float32).

    When ``x`` is this process's block of ``param``, an FSDP2 ``DTensor`` split along ``dim``,
    the sums of squares are all-reduced over the shards and the mean taken over the full
    ``param.size(dim)``: the result is the global one (``analysis.parallel``).
    """
    total, n = sum_of_squares(x, dim), x.size(dim)
    group = sharded_group(param, dim) if param is not None else None
    if group is not None:
        torch.distributed.all_reduce(total, group=group)
        n = param.size(dim)
    return total.div_(n).sqrt_().clamp_min_(floor).reciprocal_()


def rms_normalize(x: Tensor, dim: int, floor: float = RMS_FLOOR) -> Tensor:
    """``x / max(rms(x, dim), floor)`` with ``rms = sqrt(mean(x**2, dim))``.

    Every slice along the other axes gets unit RMS. ``dim=1`` on an ``nn.Linear`` weight
    ``(out, in)`` gives one scale per output unit (the paper's column-wise normalization).
    """
    return (x * inverse_rms(x, dim, floor)).to(x.dtype)


class Scaled:
    """A direction ``base * scale`` (``scale`` broadcasts), kept unmultiplied so the optimizer
    can apply it as one in-place ``p.addcmul_(base, scale, value=-lr)``: no matrix-sized
    temporary per step. ``materialize()`` gives the tensor to anything that needs one."""

    __slots__ = ("base", "scale")

    def __init__(self, base: Tensor, scale: Tensor):
        self.base, self.scale = base, scale

    def materialize(self) -> Tensor:
        return (self.base * self.scale).to(self.base.dtype)


def as_tensor(direction) -> Tensor:
    return direction.materialize() if isinstance(direction, Scaled) else direction


def newton_schulz(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximate the orthogonal polar factor ``U V^T`` of ``g = U S V^T`` (float32).

    ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``, started from ``g / ||g||_F`` and run on the
    wide orientation; the quintic pushes every singular value towards ~1 (into about [0.7, 1.2]).
    """
    x = g.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


# ----------------------------------------------------------------------------- transforms

class Transform:
    """Base class: a stateless-by-default direction map.

    Under FSDP2 (``analysis.parallel``) ``update`` gets this process's row block of the
    gradient and of the state, and the whole logical ``param`` (a ``DTensor``).
    ``row_shard_safe`` says the update of a row block equals the row block of the update
    (elementwise rules, per-row rules, or rules that communicate what they need); the trainer
    refuses FSDP2 for a transform without it.
    """

    name = "identity"
    row_shard_safe = True
    accepts_scaled = False  # True: update() takes a Scaled direction as it is

    def init(self, param: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, grad: Tensor, state: dict, param: Tensor) -> Tensor:
        return grad

    def state_numel(self, param: Tensor) -> int:
        """Elements of state this transform keeps for ``param`` (for memory accounting)."""
        return sum(t.numel() for t in self.init(param).values() if torch.is_tensor(t) and t.ndim > 0)

    def __repr__(self) -> str:
        return self.name


class momentum(Transform):
    """Heavy-ball momentum, ``kind="ema"``: ``m <- beta m + (1 - beta) g`` (SCALE, Muon; no bias
    correction), or ``kind="sum"``: ``m <- beta m + g`` (torch SGD). Zero init. With
    ``nesterov`` the direction is ``g + beta (m - g)`` (ema) / ``g + beta m`` (sum)."""

    name = "momentum"

    def __init__(self, beta: float = 0.9, kind: str = "ema", nesterov: bool = False):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"momentum beta must be in [0, 1), got {beta}")
        if kind not in ("ema", "sum"):
            raise ValueError(f"momentum kind must be 'ema' or 'sum', got {kind!r}")
        self.beta, self.kind, self.nesterov = beta, kind, nesterov

    def init(self, param):
        return {"buf": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def update(self, grad, state, param):
        buf = state["buf"]
        if self.kind == "ema":
            buf.lerp_(grad, 1.0 - self.beta)
            return grad.lerp(buf, self.beta) if self.nesterov else buf
        buf.mul_(self.beta).add_(grad)
        return grad.add(buf, alpha=self.beta) if self.nesterov else buf

    def __repr__(self):
        return f"momentum({self.beta}{', nesterov' if self.nesterov else ''})"


class normalize(Transform):
    """Unit RMS along ``axis`` (see ``rms_normalize``); ``axis=1``: one scale per torch row."""

    name = "normalize"

    def __init__(self, axis: int):
        self.axis = axis

    def update(self, grad, state, param):
        return Scaled(grad, inverse_rms(grad, self.axis, param=param))

    def __repr__(self):
        return f"normalize(dim={self.axis})"


class sign(Transform):
    """``sign(g)``: steepest descent under the max-norm; every entry has magnitude 1 (RMS 1)."""

    name = "sign"

    def update(self, grad, state, param):
        return torch.sign(grad)


class orthogonalize(Transform):
    """Newton-Schulz polar factor, rescaled to unit RMS: ``sqrt(max(m, n)) * NS(g)``.

    An orthogonal ``m x n`` factor has RMS ``1/sqrt(max(m, n))``; the rescale puts spectral
    normalization on the same per-entry scale as sign and column normalization, so the
    normalization ladder shares learning rates.
    """

    name = "orthogonalize"
    row_shard_safe = False  # Newton-Schulz mixes all rows

    def __init__(self, steps: int = 5):
        self.steps = steps

    def update(self, grad, state, param):
        g = grad.reshape(grad.size(0), -1)
        scale = math.sqrt(max(g.shape))
        return (newton_schulz(g, self.steps) * scale).view_as(grad)

    def __repr__(self):
        return f"orthogonalize(ns_steps={self.steps})"


class scale_by_adam(Transform):
    """Bias-corrected Adam direction ``m_hat / (sqrt(v_hat) + eps)`` with
    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``, ``m_hat = m/(1-b1^t)``, ``v_hat = v/(1-b2^t)``."""

    name = "adam"

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        for b in betas:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"adam betas must be in [0, 1), got {betas}")
        if eps < 0:
            raise ValueError(f"adam eps must be >= 0, got {eps}")
        self.betas, self.eps = tuple(betas), eps

    def init(self, param):
        # The step count is a Python int: load_state_dict casts floating tensors to the
        # parameter's dtype, and a bf16 counter would stop counting at 256.
        return {"step": 0,
                "exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}

    def update(self, grad, state, param):
        state["step"] = state["step"] + 1
        return self.direction(grad, state, state["step"])

    def direction(self, grad, state, t: int):
        """Update the moments with ``grad``; the direction with bias correction for step ``t``."""
        b1, b2 = self.betas
        state["exp_avg"].lerp_(grad, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (state["exp_avg_sq"] / (1 - b2 ** t)).sqrt_().add_(self.eps)
        return state["exp_avg"] / (1 - b1 ** t) / denom

    def __repr__(self):
        return f"adam(betas={self.betas}, eps={self.eps})"


class tap(Transform):
    """Pass the direction through unchanged and show it to the active instrumentation."""

    name = "tap"

    def __init__(self, label: str):
        self.label = label

    accepts_scaled = True  # passes a Scaled direction through; materializes only to show it

    def update(self, grad, state, param):
        if _tap_listener is not None:
            _tap_listener(self.label, as_tensor(grad), param)
        return grad

    def __repr__(self):
        return f"tap({self.label!r})"


class _Namespace(dict):
    """A view of one transform's keys inside the shared per-parameter state dict."""

    def __init__(self, state: dict, prefix: str):
        super().__init__()
        self._state, self._prefix = state, prefix

    def __getitem__(self, key):
        return self._state[self._prefix + key]

    def __setitem__(self, key, value):
        self._state[self._prefix + key] = value

    def __contains__(self, key):
        return self._prefix + key in self._state


class chain(Transform):
    """Apply transforms in order; child ``i`` keeps its state under ``"{i}.{name}."``."""

    name = "chain"

    def __init__(self, *transforms: Transform):
        self.transforms = transforms
        self.row_shard_safe = all(t.row_shard_safe for t in transforms)

    def _prefix(self, i, t):
        return f"{i}.{t.name}."

    def init(self, param):
        state = {}
        for i, t in enumerate(self.transforms):
            for key, value in t.init(param).items():
                state[self._prefix(i, t) + key] = value
        return state

    def update(self, grad, state, param):
        for i, t in enumerate(self.transforms):
            if isinstance(grad, Scaled) and not t.accepts_scaled:
                grad = grad.materialize()
            grad = t.update(grad, _Namespace(state, self._prefix(i, t)), param)
        return grad

    def __repr__(self):
        return " -> ".join(repr(t) for t in self.transforms) or "identity"
