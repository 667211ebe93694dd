"""The advisor's probe: per-matrix gradient variance of *your* model on *your* batches.

As the paper measures it before placing momentum (arXiv 2506.16659, Figure 4): train with
column normalization and no momentum anywhere (``col_norm``), and after warmup, at ``points``
times, take ``k`` batch gradients at the same weights and estimate each matrix's gradient
variance across them with estimator (a) (``analysis.instrument.estimators.microbatch_variance``):

    sigma_m^2 = (sum_k ||g_{m,k}||^2 - k ||g_bar_m||^2) / (k - 1)

also relative to ``||g_bar_m||^2``. The gradients are taken with ``torch.autograd.grad`` (the
training step's ``.grad`` is untouched). Each seed trains its own copy of the model on its own
batch order, so the spread over ``seeds`` is the probe's own noise.

Any ``nn.Module`` whose roles ``analysis.optim.roles`` can assign works; ``loss_fn(model,
batch)`` gives the loss (default: a causal LM's ``model(input_ids=batch, labels=batch).loss``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from analysis.instrument.estimators import microbatch_variance, sqnorm
from analysis.optim.hyper import MATRIX_ROLES
from analysis.optim.recipes import build_optimizer


def causal_lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The mean token loss of a causal LM (transformers' ``labels`` convention)."""
    return model(input_ids=batch, labels=batch).loss


@dataclass(frozen=True)
class ProbeConfig:
    """How long and how often the probe looks: ``steps`` of col_norm at peak ``lr`` after a
    linear warmup of ``warmup`` steps, the variance at ``points`` times spread over the steps
    after warmup, each from ``k`` batch gradients, on each of ``seeds``."""

    steps: int = 60
    warmup: int = 10
    points: int = 3
    k: int = 8
    seeds: int = 2
    lr: float = 3e-3

    def probe_steps(self) -> list[int]:
        """The steps (after warmup, the last included) at which the variance is taken."""
        span = self.steps - self.warmup
        return sorted({self.warmup + round(span * (i + 1) / self.points) for i in range(self.points)})


def block_of(name: str) -> str:
    """A parameter's block: its name up to the first numeric component (``model.layers.3``), or
    the name itself for a parameter outside the repeated blocks (the embedding, the output)."""
    match = re.match(r"^(.*?\.\d+)\.", name)
    return match.group(1) if match else name


def type_of(name: str) -> str:
    """A parameter's layer type across blocks: its name with the block index as ``*``
    (``model.layers.*.mlp.down_proj.weight``), also a ``momentum_on`` glob for every block."""
    return re.sub(r"\.\d+\.", ".*.", name, count=1)


def probe(
    model: torch.nn.Module,
    batches: Sequence,
    loss_fn: Callable | None = None,
    config: ProbeConfig | None = None,
    rules=None,
) -> pd.DataFrame:
    """One row per matrix: ``name``, ``role`` (a mixture of experts' router and experts as
    roles of their own, ``roles.ParamLayout.kind``), ``block``, ``type``, ``layer`` (its module),
    ``shape``, ``elements``, ``bytes`` (one buffer in the parameter's dtype), and the variance
    ``sigma2`` (mean over seeds of the mean over the probe's points), ``sigma2_std`` (over
    seeds), ``sigma2_rel`` (over ``||g||^2``). ``batches``: a sequence the probe cycles
    through, in a seeded order per seed. The model itself is not trained (copies are)."""
    loss_fn, config = loss_fn or causal_lm_loss, config or ProbeConfig()
    if len(batches) < config.k:
        raise ValueError(f"the probe needs at least k={config.k} batches, got {len(batches)}")
    per_seed = [_one_seed(model, batches, loss_fn, config, rules, seed) for seed in range(config.seeds)]
    frame = pd.concat(per_seed, ignore_index=True)
    keys = ["name", "role", "block", "type", "layer", "shape", "elements", "bytes"]
    summary = frame.groupby(keys, sort=False, as_index=False).agg(
        sigma2=("sigma2", "mean"), sigma2_std=("sigma2", "std"), sigma2_rel=("sigma2_rel", "mean")
    )
    return summary


def _one_seed(model, batches, loss_fn, config: ProbeConfig, rules, seed: int) -> pd.DataFrame:
    torch.manual_seed(seed)
    model = copy.deepcopy(model)
    optimizer = build_optimizer("col_norm", model, lr=config.lr, momentum="none", rules=rules)
    matrices = [p for p in optimizer.layout.params.values() if p.role in MATRIX_ROLES]
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed)).tolist()
    draws = iter(order * (1 + (config.steps + config.points * config.k) // len(batches)))
    wanted, sums = set(config.probe_steps()), []
    peaks = [g["lr"] for g in optimizer.param_groups]  # linear warmup to these, then constant
    for step in range(1, config.steps + 1):
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = peak * min(1.0, step / max(1, config.warmup))
        loss_fn(model, batches[next(draws)]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step in wanted:
            sums.append(
                _variance_at(model, [batches[next(draws)] for _ in range(config.k)], loss_fn, matrices)
            )
    rows = []
    for i, p in enumerate(matrices):
        sigma2 = sum(s[i][0] for s in sums) / len(sums)
        rel = sum(s[i][1] for s in sums) / len(sums)
        rows.append(
            {
                "name": p.name,
                "role": p.kind,
                "block": block_of(p.name),
                "type": type_of(p.name),
                "layer": p.layer,
                "shape": tuple(p.param.shape),
                "elements": p.param.numel(),
                "bytes": p.param.numel() * p.param.element_size(),
                "sigma2": sigma2,
                "sigma2_rel": rel,
                "seed": seed,
            }
        )
    return pd.DataFrame(rows)


def _variance_at(model, batches, loss_fn, matrices) -> list[tuple[float, float]]:
    """``(sigma^2, sigma^2 / ||g_bar||^2)`` per matrix from the gradients of ``batches``."""
    params = [p.param for p in matrices]
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    sq = torch.zeros(len(params), dtype=torch.float64)
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(model, batch), params, allow_unused=True)
        for i, g in enumerate(grads):
            if g is not None:
                total[i] += g.double()
                sq[i] += sqnorm(g)
    k = len(batches)
    out = []
    for i in range(len(params)):
        mean_sq = sqnorm(total[i] / k)
        var = microbatch_variance(sq[i], mean_sq, k)
        out.append((float(var), float(var / mean_sq.clamp_min(1e-300))))
    return out
