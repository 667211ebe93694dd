"""Three recent matrix optimizers written as transform chains, each from its paper's stated
rule: worked examples of designing an optimizer from the parts SCALE is built of
(notebook 08), and recipes (``rmnp``, ``normuon``, ``muoneq``).

On hidden matrices (every other parameter: AdamW, torch's rule, as the three papers pair them):

- **RMNP** (Deng et al., arXiv 2603.20527): ``m <- beta m + (1 - beta) g``, then every row of
  ``m`` (one output unit's fan-in) scaled to unit L2 norm, ``theta <- theta - lr d``. The same
  map as SCALE's column normalization up to the constant ``sqrt(fan-in)`` (unit L2 against
  unit RMS), with momentum on every hidden matrix.
- **NorMuon** (Li et al., arXiv 2510.05491, Algorithm 1): ``M <- b1 M + (1 - b1) g``,
  ``O = NS5(M)``, a second moment per output unit ``v <- b2 v + (1 - b2) mean_cols(O^2)``,
  ``O_hat = O / (sqrt(v) + eps)``, step ``lr * 0.2 sqrt(m n) / ||O_hat||_F * O_hat`` (update RMS
  0.2 lr, Moonlight's AdamW-matching scale). b1 = b2 = 0.95.
- **MuonEq**, its default row variant R (Chang et al., arXiv 2603.28254): Muon's Nesterov
  momentum ``B <- beta B + g``, ``U = g + beta B``, rows equilibrated before orthogonalization
  ``U_tilde = diag(||U_i||^2 + eps)^(-1/2) U``, ``O = NS5(U_tilde)``, step ``lr * 0.2
  sqrt(max(m, n)) O``.

Where a paper leaves a choice open, ``hidden_rule`` says which was made. Newton-Schulz is the
quintic of ``maths.newton_schulz`` in float32 (the papers' code runs it in bf16 on GPU).
"""

from __future__ import annotations

import math

import torch

from analysis.optim.hyper import OptimizerConfig, role_groups
from analysis.optim.maths import Scaled, as_dim, at_least_fp32, reduction_dtype, sum_of_squares
from analysis.optim.optimizer import ChainedOptimizer
from analysis.optim.transforms import PerLayout, Transform, chain, momentum, orthogonalize, scale_by_adam, tap

BETA = 0.95


class unit_rows(Transform):
    """Each output unit's slice (over the fan-in ``axis``) divided by ``sqrt(||.||^2 + eps)``:
    unit L2 norm per row (RMNP's map, ``eps = 0``: a zero row stays zero; MuonEq's row
    equilibration, ``eps`` inside the root).

    >>> import torch
    >>> unit_rows(1).update(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), {}, None).materialize()
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """

    name = "unit_rows"
    row_shard_safe = False  # a column (fan-in axis 0) spans every FSDP2 row block; no all-reduce here

    def __init__(self, axis, eps: float = 0.0):
        self.axis, self.eps = axis, eps

    def update(self, grad, state, param):
        # the clamp only keeps a zero row at zero (0 * finite) when eps is 0
        return Scaled(grad, sum_of_squares(grad, self.axis).add_(self.eps).clamp_min_(1e-30).rsqrt_())

    def __repr__(self):
        return f"unit_rows(dim={self.axis})"


class neuron_normalize(Transform):
    """NorMuon's step after Newton-Schulz: a second moment per output unit (torch row)
    ``v <- b2 v + (1 - b2) mean_cols(O^2)`` (zero init, no bias correction), ``O_hat = O /
    (sqrt(v) + eps)``, rescaled to RMS ``rms``: ``rms sqrt(m n) O_hat / ||O_hat||_F``."""

    name = "neuron_normalize"
    row_shard_safe = False  # the Frobenius norm spans every row

    def __init__(self, beta2: float = BETA, eps: float = 1e-8, rms: float = 0.2):
        self.beta2, self.eps, self.rms = beta2, eps, rms

    def init(self, param):
        return {"v": torch.zeros(param.size(0), 1, dtype=reduction_dtype(param.dtype), device=param.device)}

    def update(self, grad, state, param):
        o = at_least_fp32(grad.reshape(grad.size(0), -1))
        state["v"].lerp_(o.square().mean(dim=1, keepdim=True), 1 - self.beta2)
        o_hat = o / (state["v"].sqrt() + self.eps)
        o_hat *= self.rms * math.sqrt(o.numel()) / o_hat.norm().clamp_min(1e-30)
        return o_hat.view_as(grad).to(grad.dtype)

    def __repr__(self):
        return f"neuron_normalize(beta2={self.beta2}, rms={self.rms})"


class multiply(Transform):
    """The direction times a constant (a paper's fixed update scale, kept out of the lr).

    >>> import torch
    >>> multiply(0.2).update(torch.tensor([1.0, -2.0]), {}, None)
    tensor([ 0.2000, -0.4000])
    """

    name = "multiply"
    accepts_scaled = True

    def __init__(self, factor: float):
        self.factor = factor

    def update(self, grad, state, param):
        if isinstance(grad, Scaled):
            return Scaled(grad.base, grad.scale * self.factor)
        return grad * self.factor

    def __repr__(self):
        return f"multiply({self.factor})"


def hidden_rule(name: str, cfg: OptimizerConfig, fan_in: tuple[int, ...]) -> Transform:
    """The hidden-matrix chain of variant ``name`` for fan-in axes ``fan_in`` (the rules: the
    module docstring).

    What could not be pinned down, and the choice made:

    - RMNP: the paper states the rule for "a weight matrix"; which matrices, beta and any lr
      scale are not in the stated rule. Hidden matrices with AdamW elsewhere (the Muon grouping
      of a public RMNP implementation), beta 0.95, no Nesterov and no shape factor (that
      implementation adds both).
    - NorMuon: the value of eps is not stated (1e-8 here; the authors' code uses 1e-10), and the
      authors' code adds Nesterov momentum and keeps the pre-normalization Frobenius norm times
      ``sqrt(max(1, m / n))`` instead of the paper's ``0.2 sqrt(m n)``: the paper's rule is used.
    - MuonEq: the paper speaks of O(m + n) auxiliary state; its code keeps none (the row norms
      of the current momentum), as here; eps 1e-8 inside the square root, as in its code.
    - RMNP states no eps: none here (a zero row stays zero).
    """
    axis = as_dim(fan_in)
    if name == "rmnp":
        parts = [momentum(BETA), tap("momentum"), unit_rows(axis)]
    elif name == "normuon":
        parts = [momentum(BETA), tap("momentum"), orthogonalize(cfg.ns_steps), neuron_normalize()]
    elif name == "muoneq":
        # Muon's sum momentum with Nesterov; its scale cancels in the row equilibration
        parts = [
            momentum(BETA, kind="sum", nesterov=True),
            unit_rows(axis, eps=1e-8),
            orthogonalize(cfg.ns_steps),
            multiply(0.2),
        ]
    else:
        raise ValueError(f"unknown variant {name!r}")
    return chain(*parts, tap("update"))


def adam_elsewhere(layout, cfg: OptimizerConfig, hidden: PerLayout) -> ChainedOptimizer:
    """``hidden`` on the hidden matrices; Adam (torch's rule) on the embedding, the output
    layer and the vectors."""
    transforms = {"hidden": hidden}
    for role in ("embedding", "output", "vector"):
        transforms[role] = chain(scale_by_adam(cfg.betas, cfg.eps), tap("update"))
    return ChainedOptimizer(role_groups(layout, cfg), transforms)


def hidden_with_adamw(name: str):
    """A recipe builder: ``name``'s rule on hidden matrices, AdamW (torch's rule) elsewhere."""

    def build(layout, cfg: OptimizerConfig):
        return adam_elsewhere(layout, cfg, PerLayout(lambda fan_in: hidden_rule(name, cfg, fan_in)))

    return build
