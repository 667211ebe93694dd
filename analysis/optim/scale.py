r"""SCALE in one file, depending on torch alone: copy it into any training loop.

SCALE (Stochastic Column-normAlized Last-layer momEntum, arXiv 2506.16659, Algorithm 1 and its
code release) is plain SGD with two changes: every matrix's update is normalized per output
unit, and the output layer alone keeps momentum. Vectors (norm gains, biases) take Adam.

.. math::
    \begin{aligned}
    &\textbf{input}: \gamma \text{ (lr)},\ \gamma_v \text{ (adam\_lr)},\ \beta \text{ (momentum)},
        \ \beta_1, \beta_2, \epsilon,\ \lambda \text{ (weight decay)} \\
    &\textbf{for } t = 1, 2, \ldots: \\
    &\quad \textbf{for each matrix } W \text{ with gradient } G \text{ and fan-in axes } A: \\
    &\qquad D \leftarrow G \quad \text{or, on the output layer only,} \quad
        m \leftarrow \beta m + (1 - \beta) G,\ \ D \leftarrow m \\
    &\qquad s \leftarrow \max\Big(\sqrt{\operatorname{mean}_{A} D^2},\ 10^{-8}\Big)
        \quad \text{(one scale per output unit)} \\
    &\qquad W \leftarrow W (1 - \gamma \lambda) - \gamma\, D / s \\
    &\quad \textbf{for each vector } v \text{ with gradient } g: \\
    &\qquad m_v \leftarrow \beta_1 m_v + (1 - \beta_1) g, \quad
        u \leftarrow \beta_2 u + (1 - \beta_2) g^2 \\
    &\qquad v \leftarrow v (1 - \gamma_v \lambda) - \gamma_v
        \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\, \frac{m_v}{\sqrt{u} + \epsilon}
    \end{aligned}

The fan-in axes are those of one output unit's incoming weights (the paper's "column"):
``nn.Linear.weight`` is stored ``(out, in)``, so axis 1; a convolution ``(out, in, kh, kw)``,
axes 1-3; GPT-2's ``Conv1D`` stores ``(in, out)``, axis 0. The embedding ``(vocab, hidden)`` is
normalized over axis 0, one scale per hidden feature, as the paper's code does. The momentum
is an EMA with no bias correction (normalization ignores scale); it is the only matrix state,
so SCALE keeps one buffer of the output layer's size. The vectors' Adam is the release's: the
second moment is not bias-corrected before ``eps``, both corrections are folded into the step.
The paper's runs: ``lr`` 1e-3 (<= 350M), ``adam_lr`` 2e-2, ``beta`` 0.9, no weight decay, no
gradient clipping, warmup then cosine decay of both lrs.

Usage::

    groups = scale_param_groups(model)        # roles and fan-in axes, by layer type
    opt = SCALE(groups, lr=1e-3, adam_lr=2e-2)

``analysis.optim.recipes`` builds the same rule from composable transforms (with the fused
step and the instrumentation's taps); tests keep the two equal in float64.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ROLES = ("embedding", "hidden", "output", "vector")


@torch.no_grad()
def scale_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor | None],
    fan_in: tuple[int, ...],
    *,
    lr: float,
    beta: float = 0.9,
    weight_decay: float = 0.0,
) -> None:
    """One SCALE step on matrices that share ``fan_in`` axes, in place: a buffer (the output
    layer's) takes the EMA of its gradient and stands in for it; a None buffer means none."""
    for p, g, buffer in zip(params, grads, momentum_buffers):
        direction = g
        if buffer is not None:
            buffer.lerp_(g, 1 - beta)
            direction = buffer
        scale = direction.square().mean(dim=fan_in, keepdim=True).sqrt().clamp_min(1e-8)
        p.mul_(1 - lr * weight_decay).add_(direction / scale, alpha=-lr)


@torch.no_grad()
def adam_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    step: int,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> None:
    """The release's Adam on vectors at step ``step`` (1-based), in place."""
    beta1, beta2 = betas
    step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.mul_(1 - lr * weight_decay).addcdiv_(m, v.sqrt().add_(eps), value=-step_size)


class SCALE(torch.optim.Optimizer):
    """SCALE as a ``torch.optim.Optimizer``. Each parameter group says its ``role``
    (``embedding``, ``hidden``, ``output``: matrices; ``vector``: Adam) and, for matrices, its
    ``fan_in`` axes; ``scale_param_groups`` builds them for a model. A vector group without its
    own ``lr`` takes ``adam_lr``. LR schedulers scale every group's ``lr`` alike."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        adam_lr: float = 2e-2,
        beta: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        for name, value, ok in (
            ("lr", lr, lr > 0),
            ("adam_lr", adam_lr, adam_lr > 0),
            ("beta", beta, 0 <= beta < 1),
            ("eps", eps, eps >= 0),
            ("betas", betas, all(0 <= b < 1 for b in betas)),
            ("weight_decay", weight_decay, weight_decay >= 0),
        ):
            if not ok:
                raise ValueError(f"SCALE: invalid {name} {value!r}")
        self._adam_lr = adam_lr
        super().__init__(
            params,
            dict(
                lr=lr, beta=beta, betas=betas, eps=eps, weight_decay=weight_decay, role="hidden", fan_in=(1,)
            ),
        )

    def add_param_group(self, group: dict) -> None:
        if group.get("role", "hidden") not in ROLES:
            raise ValueError(f"SCALE: unknown role {group['role']!r}; choose one of {', '.join(ROLES)}")
        if group.get("role") == "vector":
            group.setdefault("lr", self._adam_lr)
        group["fan_in"] = tuple(group.get("fan_in", (1,)))
        super().add_param_group(group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            if group["role"] == "vector":
                states = [self.state[p] for p in params]
                for p, state in zip(params, states):
                    if not state:
                        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                    state["step"] += 1
                for p, g, state in zip(params, grads, states):  # each vector its own step count
                    adam_step(
                        [p],
                        [g],
                        [state["exp_avg"]],
                        [state["exp_avg_sq"]],
                        state["step"],
                        lr=group["lr"],
                        betas=group["betas"],
                        eps=group["eps"],
                        weight_decay=group["weight_decay"],
                    )
                continue
            buffers = []
            for p in params:
                if group["role"] == "output" and "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                buffers.append(self.state[p].get("momentum_buffer"))
            scale_step(
                params,
                grads,
                buffers,
                group["fan_in"],
                lr=group["lr"],
                beta=group["beta"],
                weight_decay=group["weight_decay"],
            )
        return loss


def _fan_in(module: nn.Module, name: str, p: torch.Tensor) -> tuple[str, tuple[int, ...]] | None:
    """(role, fan-in axes) of a matrix by its layer's type; None for a layer SCALE has no rule for."""
    if isinstance(module, nn.Embedding):
        return "embedding", (0,)
    if isinstance(module, nn.Linear) or (
        isinstance(module, nn.MultiheadAttention) and name.endswith("proj_weight")
    ):  # (out, in) too
        return "hidden", (1,)
    if isinstance(module, nn.modules.conv._ConvNd):
        return "hidden", tuple(range(1, p.ndim))
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 layer, weight (in, out)
        return "hidden", (0,)
    return None


def scale_param_groups(model: nn.Module, output: nn.Module | None = None) -> list[dict]:
    """SCALE's parameter groups for ``model``, one per (role, fan-in axes): the output layer
    is ``output``, else ``model.get_output_embeddings()`` (transformers), else the last
    ``nn.Linear``; embeddings, linear, attention and convolution layers by type; every tensor
    with fewer than 2 dimensions a vector; frozen tensors left out. A matrix of another layer type, or an output layer that shares
    its weight with the embedding (tied), is a ``ValueError`` naming it."""
    if output is None and hasattr(model, "get_output_embeddings"):
        output = model.get_output_embeddings()
    if output is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        output = linears[-1] if linears else None
    groups: dict[tuple[str, tuple[int, ...]], list[torch.Tensor]] = {}
    seen: dict[int, str] = {}
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if not p.requires_grad:
                continue
            if id(p) in seen:
                if module is output or seen[id(p)] == "output":
                    raise ValueError(
                        f"SCALE: {full} is tied to {seen[id(p)]}'s weight; the output layer "
                        "takes momentum and the embedding does not: untie them "
                        "(tie_word_embeddings=False) or pass the groups by hand"
                    )
                continue
            if p.ndim < 2:
                key = ("vector", ())
            elif module is output and name == "weight":
                key = ("output", (1,))
            else:
                found = _fan_in(module, name, p)
                if found is None:
                    raise ValueError(
                        f"SCALE: no rule for {full} ({type(module).__name__}, shape "
                        f"{tuple(p.shape)}); give it a group with its role and fan_in axes"
                    )
                key = found
            seen[id(p)] = key[0] if key[0] == "output" else full
            groups.setdefault(key, []).append(p)
    return [
        {"params": params, "role": role, **({"fan_in": axes} if role != "vector" else {})}
        for (role, axes), params in groups.items()
    ]
