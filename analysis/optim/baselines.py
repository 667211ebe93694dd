"""The two baselines written from their papers' rules, SWAN and Stable-SPAM (no maintained
package implements them exactly): their per-tensor transforms, and the builders (``swan``,
``stable_spam``) that ``recipes`` names.

SWAN (Ma et al., arXiv 2412.13148), stateless on hidden matrices:

- ``standardize(axis)`` (GradNorm): ``(G - mean(G)) / std(G)`` along the fan-in axis, so every
  output unit's gradient has zero mean and unit standard deviation;
- then whitening ``(G G^T)^{-1/2} G``, which is the orthogonal polar factor of ``G``: the
  ``orthogonalize`` transform (Newton-Schulz, rescaled to unit RMS). The paper's optional
  rescale of the whitened matrix is not pinned down; unit RMS is used so lrs compare with
  the ladder.

Stable-SPAM (Huang et al., arXiv 2502.17055), Adam with three gradient pre-processors, per
tensor, at step ``t``:

1. ``spike_clip(theta)``: ``m_max <- theta m_max + (1 - theta) max|G|``, ``m_hat = m_max /
   (1 - theta^t)``; entries with ``|g| > m_hat`` become ``g / max|G| * m_hat``;
2. ``norm_scale(gamma1, gamma2)``: ``m <- gamma1 m + (1 - gamma1) ||G||``,
   ``v <- gamma2 v + (1 - gamma2) ||G||^2`` (bias-corrected), ``G <- G / ||G|| * m_hat / sqrt(v_hat)``;
3. ``adam_with_reset(betas, eps, every)``: bias-corrected Adam whose moments are zeroed and
   whose bias correction restarts every ``every`` steps.

Two points of the reference code are not reproduced and are stated here: at a reset step the
reference still uses the old moments for that one step (it rebinds the state after binding its
locals), here the reset takes effect at once; and the optional cosine decay of ``gamma1`` and
``beta1`` over ``total_T`` steps is not implemented (constant gammas).
"""

from __future__ import annotations

import torch

from analysis.optim.hyper import role_groups
from analysis.optim.maths import as_dim, at_least_fp32, reduction_dtype
from analysis.optim.optimizer import ChainedOptimizer
from analysis.optim.transforms import PerLayout, Transform, chain, orthogonalize, scale_by_adam, tap
from analysis.optim.variants import adam_elsewhere


class standardize(Transform):
    """SWAN's GradNorm: zero mean, unit (population) std along ``axis``; a constant slice -> 0.

    >>> import torch
    >>> standardize(1).update(torch.tensor([[1.0, 3.0], [2.0, 2.0]]), {}, None)
    tensor([[-1.,  1.],
            [ 0.,  0.]])
    """

    name = "standardize"

    def __init__(self, axis: int, eps: float = 1e-8):
        self.axis, self.eps = axis, eps
        self.row_shard_safe = axis in (1, -1)  # statistics along a row stay in its block

    def update(self, grad, state, param):
        centred = grad - grad.mean(dim=self.axis, keepdim=True)
        std = centred.square().mean(dim=self.axis, keepdim=True).sqrt()
        return centred / std.clamp_min(self.eps)

    def __repr__(self):
        return f"standardize(dim={self.axis})"


class spike_clip(Transform):
    """Stable-SPAM's adaptive spike clipping against a bias-corrected EMA of ``max|G|``.

    At step 1 the bound is ``max|G|`` itself, so nothing is clipped; a later spike is cut to
    the running bound (here (0.5 * 1 + 0.5 * 10) / (1 - 0.5^2) = 7.33):

    >>> import torch
    >>> clip = spike_clip(0.5)
    >>> p = torch.zeros(2); state = clip.init(p)
    >>> clip.update(torch.tensor([1.0, -2.0]), state, p)
    tensor([ 1., -2.])
    >>> clip.update(torch.tensor([1.0, 10.0]), state, p)
    tensor([1.0000, 7.3333])
    """

    name = "spike_clip"
    row_shard_safe = False  # max over the whole matrix

    def __init__(self, theta: float = 0.999):
        self.theta = theta

    def init(self, param):
        return {
            "step": 0,
            "max_ema": torch.zeros((), dtype=reduction_dtype(param.dtype), device=param.device),
        }

    def update(self, grad, state, param):
        t = state["step"] = state["step"] + 1
        peak = at_least_fp32(grad.abs().max())
        state["max_ema"].mul_(self.theta).add_(peak, alpha=1 - self.theta)
        bound = state["max_ema"] / (1 - self.theta**t)
        spikes = grad.abs() > bound
        return torch.where(spikes, grad / peak.clamp_min(1e-30) * bound, grad)

    def __repr__(self):
        return f"spike_clip(theta={self.theta})"


class norm_scale(Transform):
    """Stable-SPAM's adaptive norm scaling: ``G / ||G|| * m_hat / sqrt(v_hat)``.

    At step 1 ``m_hat = ||G||`` and ``sqrt(v_hat) = ||G||``, so the gradient becomes unit norm:

    >>> import torch
    >>> scale = norm_scale()
    >>> p = torch.zeros(2); state = scale.init(p)
    >>> scale.update(torch.tensor([3.0, 4.0]), state, p)
    tensor([0.6000, 0.8000])
    """

    name = "norm_scale"
    row_shard_safe = False  # the norm of the whole matrix

    def __init__(self, gamma1: float = 0.7, gamma2: float = 0.9):
        self.gamma1, self.gamma2 = gamma1, gamma2

    def init(self, param):
        zero = torch.zeros((), dtype=reduction_dtype(param.dtype), device=param.device)
        return {"step": 0, "norm_m": zero.clone(), "norm_v": zero.clone()}

    def update(self, grad, state, param):
        t = state["step"] = state["step"] + 1
        norm = at_least_fp32(grad).norm()
        state["norm_m"].mul_(self.gamma1).add_(norm, alpha=1 - self.gamma1)
        state["norm_v"].mul_(self.gamma2).add_(norm * norm, alpha=1 - self.gamma2)
        m_hat = state["norm_m"] / (1 - self.gamma1**t)
        v_hat = state["norm_v"] / (1 - self.gamma2**t)
        return grad / norm.clamp_min(1e-30) * (m_hat / v_hat.sqrt().clamp_min(1e-30))

    def __repr__(self):
        return f"norm_scale({self.gamma1}, {self.gamma2})"


class adam_with_reset(scale_by_adam):
    """Bias-corrected Adam; every ``every`` steps the moments are zeroed and ``t`` restarts.

    >>> import torch
    >>> adam = adam_with_reset(every=2)
    >>> p = torch.zeros(1); state = adam.init(p)
    >>> [adam.update(torch.tensor([g]), state, p).item() for g in (1.0, -1.0, -1.0)]
    [1.0, -0.052..., -1.0]
    """

    name = "adam_reset"

    def __init__(self, betas=(0.9, 0.999), eps: float = 1e-8, every: int = 1000):
        if every < 1:
            raise ValueError(f"reset interval must be >= 1, got {every}")
        super().__init__(betas, eps)
        self.every = every

    def init(self, param):
        return {**super().init(param), "since_reset": 0}

    def update(self, grad, state, param):
        state["step"] = state["step"] + 1
        if state["step"] > 1 and (state["step"] - 1) % self.every == 0:
            state["exp_avg"].zero_()
            state["exp_avg_sq"].zero_()
            state["since_reset"] = 0
        state["since_reset"] = state["since_reset"] + 1
        return self.direction(grad, state, state["since_reset"])

    def __repr__(self):
        return f"adam(betas={self.betas}, eps={self.eps}, reset every {self.every})"


def swan(layout, cfg):
    """SWAN: GradNorm then whitening on hidden matrices (stateless); Adam elsewhere."""

    return adam_elsewhere(
        layout,
        cfg,
        PerLayout(
            lambda fan_in: chain(standardize(as_dim(fan_in)), orthogonalize(cfg.ns_steps), tap("update"))
        ),
    )


def stable_spam(layout, cfg):
    """Stable-SPAM on every parameter: spike clipping, norm scaling, Adam with resets."""

    g1, g2, g3 = cfg.spam_gammas
    rule = chain(
        spike_clip(g3),
        norm_scale(g1, g2),
        adam_with_reset(cfg.betas, cfg.eps, cfg.reset_every),
        tap("update"),
    )
    groups = role_groups(layout, cfg)
    return ChainedOptimizer(groups, {g["label"]: rule for g in groups})
