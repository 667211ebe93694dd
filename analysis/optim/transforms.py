"""Per-tensor update transforms: the small parts every optimizer here is built from.

A transform turns a gradient into an update direction, one tensor at a time::

    init(param)                 -> dict of state tensors (kept in optimizer.state[param])
    update(grad, state, param)  -> direction u  (the optimizer then does p <- p - lr * u)

State is explicit: a transform keeps nothing per parameter in attributes or closures, so
``state_dict`` round trips, checkpointing and instrumentation see everything. ``chain``
namespaces each child's keys by position and name (``"0.momentum.buf"``) so a saved state
reads like the recipe.

The tensor maths lives in plain functions (``analysis.optim.maths``: ``rms_normalize``,
``newton_schulz``) that tests and notebooks call directly. Every transform's docstring has a short example that the tests
run (doctest).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable

import torch
from torch import Tensor

from analysis.optim.maths import Scaled, as_dim, as_tensor, inverse_rms, newton_schulz

# Who hears ``tap`` right now: set by ``ChainedOptimizer.step`` for the duration of its own step
# (a context variable, not a global: two optimizers, threads or tasks never share a listener).
_listener: contextvars.ContextVar[Callable[[str, Tensor, Tensor], None] | None] = contextvars.ContextVar(
    "scale_lab_tap_listener", default=None
)


@contextlib.contextmanager
def tap_listener(listener: Callable[[str, Tensor, Tensor], None]):
    """Within the block, ``tap`` calls go to ``listener(label, direction, param)``.

    Optimizers use it around their step (``ChainedOptimizer.register_tap_hook``); outside any
    such block a ``tap`` is a no-op.
    """
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


# ----------------------------------------------------------------------------- transforms


class Transform:
    """Base class: a stateless-by-default direction map.

    Under FSDP2 (``analysis.training.parallel``) ``update`` gets this process's row block of the
    gradient and of the state, and the whole logical ``param`` (a ``DTensor``).
    ``row_shard_safe`` says the update of a row block equals the row block of the update
    (elementwise rules, per-row rules, or rules that communicate what they need); the trainer
    refuses FSDP2 for a transform without it.

    The base class is the identity (plain SGD's direction):

    >>> import torch
    >>> Transform().update(torch.tensor([3.0, -4.0]), {}, None)
    tensor([ 3., -4.])
    """

    name = "identity"
    row_shard_safe = True
    accepts_scaled = False  # True: update() takes a Scaled direction as it is

    def init(self, param: Tensor) -> dict[str, Tensor]:
        return {}

    def update(self, grad: Tensor, state: dict, param: Tensor) -> Tensor:
        return grad

    def __repr__(self) -> str:
        return self.name


class momentum(Transform):
    """Heavy-ball momentum, ``kind="ema"``: ``m <- beta m + (1 - beta) g`` (SCALE, Muon; no bias
    correction), or ``kind="sum"``: ``m <- beta m + g`` (torch SGD). Zero init. With
    ``nesterov`` the direction is ``g + beta (m - g)`` (ema) / ``g + beta m`` (sum).

    >>> import torch
    >>> m = momentum(0.5)
    >>> p = torch.zeros(2); state = m.init(p)
    >>> m.update(torch.tensor([2.0, 4.0]), state, p)
    tensor([1., 2.])
    >>> m.update(torch.tensor([2.0, 4.0]), state, p)
    tensor([1.5000, 3.0000])
    """

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
    """Unit RMS along ``axis`` (see ``rms_normalize``); ``axis=1``: one scale per torch row.

    The direction comes back as a ``Scaled`` (applied in place by the optimizer):

    >>> import torch
    >>> g = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    >>> as_tensor(normalize(1).update(g, {}, g))
    tensor([[0.8485, 1.1314],
            [0.0000, 1.4142]])
    """

    name = "normalize"

    def __init__(self, axis):
        self.axis = as_dim(axis)

    def update(self, grad, state, param):
        return Scaled(grad, inverse_rms(grad, self.axis, param=param))

    def __repr__(self):
        return f"normalize(dim={self.axis})"


class PerLayout:
    """A transform that depends on a matrix's fan-in axes (``analysis.optim.roles``):
    ``build(fan_in)`` makes it once per layout, and ``ChainedOptimizer`` applies the one for
    its group's ``"fan_in"`` (an ``nn.Linear``'s ``(1,)``, GPT-2's ``Conv1D``'s ``(0,)``, a
    convolution's ``(1, 2, 3)``).

    >>> t = PerLayout(lambda fan_in: normalize(fan_in))
    >>> t.at((0,)), t.at((1,))
    (normalize(dim=0), normalize(dim=1))
    """

    def __init__(self, build: Callable[[tuple[int, ...]], Transform]):
        self.build = build
        self._made: dict[tuple[int, ...], Transform] = {}

    def at(self, fan_in) -> Transform:
        key = tuple(fan_in)
        if key not in self._made:
            self._made[key] = self.build(key)
        return self._made[key]

    def __repr__(self):
        return repr(self.at((1,)))  # as an nn.Linear's


class sign(Transform):
    """``sign(g)``: steepest descent under the max-norm; every entry has magnitude 1 (RMS 1).

    >>> import torch
    >>> sign().update(torch.tensor([0.3, -2.0, 0.0]), {}, None)
    tensor([ 1., -1.,  0.])
    """

    name = "sign"

    def update(self, grad, state, param):
        return torch.sign(grad)


class orthogonalize(Transform):
    """Newton-Schulz polar factor, rescaled to unit RMS: ``sqrt(max(m, n)) * NS(g)``.

    An orthogonal ``m x n`` factor has RMS ``1/sqrt(max(m, n))``; the rescale puts spectral
    normalization on the same per-entry scale as sign and column normalization, so the
    normalization ladder shares learning rates.

    >>> import torch
    >>> g = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    >>> u = orthogonalize().update(g, {}, g)
    >>> round(float(u.square().mean().sqrt()), 1)   # unit RMS, up to Newton-Schulz's spread
    1.0
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
    """Bias-corrected Adam direction with ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``.

    Two placements of ``eps``, which differ only on coordinates whose ``sqrt(v)`` is near eps:

    - ``eps_on="corrected"`` (torch AdamW): ``(m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``;
    - ``eps_on="raw"`` (the SCALE code release, arXiv 2506.16659, and the older HF AdamW):
      ``m / (sqrt(v) + eps) * sqrt(1-b2^t) / (1-b1^t)``, eps on the uncorrected ``v``.

    At the first step the direction is ``g / (|g| + eps)``, about ``sign(g)``:

    >>> import torch
    >>> adam = scale_by_adam()
    >>> p = torch.zeros(2); state = adam.init(p)
    >>> adam.update(torch.tensor([0.5, -3.0]), state, p)
    tensor([ 1.0000, -1.0000])
    """

    name = "adam"

    EPS_PLACEMENTS = ("corrected", "raw")

    def __init__(
        self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, eps_on: str = "corrected"
    ):
        for b in betas:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"adam betas must be in [0, 1), got {betas}")
        if eps < 0:
            raise ValueError(f"adam eps must be >= 0, got {eps}")
        if eps_on not in self.EPS_PLACEMENTS:
            raise ValueError(f"adam eps_on must be one of {self.EPS_PLACEMENTS}, got {eps_on!r}")
        self.betas, self.eps, self.eps_on = tuple(betas), eps, eps_on

    def init(self, param):
        # The step count is a Python int: load_state_dict casts floating tensors to the
        # parameter's dtype, and a bf16 counter would stop counting at 256.
        return {"step": 0, "exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}

    def update(self, grad, state, param):
        state["step"] = state["step"] + 1
        return self.direction(grad, state, state["step"])

    def direction(self, grad, state, t: int):
        """Update the moments with ``grad``; the direction with bias correction for step ``t``."""
        b1, b2 = self.betas
        state["exp_avg"].lerp_(grad, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        if self.eps_on == "raw":
            denom = state["exp_avg_sq"].sqrt().add_(self.eps)
            return state["exp_avg"] / denom * (math.sqrt(1 - b2**t) / (1 - b1**t))
        denom = (state["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(self.eps)
        return state["exp_avg"] / (1 - b1**t) / denom

    def __repr__(self):
        return f"adam(betas={self.betas}, eps={self.eps}, eps_on={self.eps_on!r})"


class tap(Transform):
    """Pass the direction through unchanged and show it to the active listener (the
    instrumentation, through ``ChainedOptimizer.register_tap_hook``).

    >>> import torch
    >>> seen = []
    >>> with tap_listener(lambda label, u, p: seen.append((label, u.tolist()))):
    ...     tap("update").update(torch.tensor([1.0]), {}, None)
    tensor([1.])
    >>> seen
    [('update', [1.0])]
    """

    name = "tap"

    def __init__(self, label: str):
        self.label = label

    accepts_scaled = True  # passes a Scaled direction through; materializes only to show it

    def update(self, grad, state, param):
        listener = _listener.get()
        if listener is not None:
            listener(self.label, as_tensor(grad), param)
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
    """Apply transforms in order; child ``i`` keeps its state under ``"{i}.{name}."``.

    SCALE's output-layer rule is momentum, then per-row normalization:

    >>> import torch
    >>> rule = chain(momentum(0.9), normalize(1))
    >>> p = torch.zeros(1, 2); state = rule.init(p)
    >>> sorted(state)
    ['0.momentum.buf']
    >>> as_tensor(rule.update(torch.tensor([[3.0, 4.0]]), state, p))
    tensor([[0.8485, 1.1314]])
    >>> rule
    momentum(0.9) -> normalize(dim=1)
    """

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
