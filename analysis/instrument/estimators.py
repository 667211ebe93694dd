"""Gradient-noise estimators, each with its exact definition. Pure functions of tensors.

Notation: a "sample" is one sequence. ``g_k`` is the token-mean gradient of micro-batch
``k`` (``b`` sequences), ``K`` micro-batches make one step's batch of ``B = K b`` sequences
with mean gradient ``g_bar``. ``Sigma`` is the per-sequence gradient covariance, so a
``b``-sequence mean has covariance ``Sigma / b`` (sequences are treated as i.i.d.).

(a) ``microbatch_variance``: across the micro-batches of one step, unbiased.
(b) ``probe_variance``: the SCALE paper's probe (arXiv 2506.16659), small batches against one
    independent large batch.
(c) ``noise_scale``: the two-batch gradient noise scale (McCandlish et al. 2018, App. A.1).
(d) ``per_example_grads``: exact per-sequence gradients of tiny models, ground truth for
    (a)-(c) in the tests.

Sums of squares are taken in float64: a variance is a difference of squared norms.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch import Tensor

from analysis.optim.maths import sum_of_squares


def sqnorm(x: Tensor, dim=None) -> Tensor:
    """``sum x^2`` (over ``dim`` if given: an axis or a layer's fan-in axes, e.g. one value per
    output row with dim=1), as float64.

    A row's squares (or a 1024-row chunk's, along dim 0) are summed in ``x``'s precision (at
    least float32), the rows' sums in float64: relative error about ``1e-7 * sqrt(row
    length)``, at a third of the cost of accumulating every square in float64 (the micro-batch
    variance subtracts two such sums, so the totals stay float64).
    """
    if dim is not None:
        return sum_of_squares(x, dim).double().squeeze(dim)
    if x.ndim < 2:
        return torch.linalg.vector_norm(x, dtype=torch.float64).square()
    return sum_of_squares(x.reshape(x.size(0), -1), 1).sum(dtype=torch.float64)


def microbatch_variance(sum_micro_sqnorms: Tensor, sqnorm_of_mean: Tensor, k: int) -> Tensor:
    """Estimator (a), the unbiased variance of a ``b``-sequence gradient (elementwise over rows)::

        tr(Sigma_b) = sum_k ||g_k - g_bar||^2 / (K - 1)
                    = (sum_k ||g_k||^2 - K ||g_bar||^2) / (K - 1)

    reported raw, relative to ``||g_bar||^2`` (an inverse signal-to-noise ratio) and per
    coordinate (``/ numel``)."""
    if k < 2:
        raise ValueError("the micro-batch variance needs at least 2 micro-batches")
    return (sum_micro_sqnorms - k * sqnorm_of_mean) / (k - 1)


def noise_scale(sq_small: Tensor, b_small: float, sq_large: Tensor, b_large: float) -> dict:
    """Estimator (c): unbiased ``|G|^2`` and per-sequence ``tr(Sigma)`` from two batch sizes,
    with ``|g_s|^2`` the squared norm of a ``b_s``-sequence mean gradient (averaged over
    several) and ``|g_l|^2`` of a ``b_l``-sequence one::

        |G|^2     = (b_l |g_l|^2 - b_s |g_s|^2) / (b_l - b_s)
        tr(Sigma) = (|g_s|^2 - |g_l|^2) / (1/b_s - 1/b_l)
        B_simple  = tr(Sigma) / |G|^2

    each of the two is unbiased; their ratio is not (average numerator and denominator over
    steps before dividing)."""
    if not b_large > b_small:
        raise ValueError("noise_scale needs b_large > b_small")
    sqnorm_true = (b_large * sq_large - b_small * sq_small) / (b_large - b_small)
    trace = (sq_small - sq_large) / (1.0 / b_small - 1.0 / b_large)
    return {"gns_sqnorm": sqnorm_true, "gns_trace": trace}


def probe_variance(small_grads: list[Tensor], large_grad: Tensor) -> Tensor:
    """Estimator (b), the SCALE paper's probe: ``K`` independent small batches of ``b``
    sequences against one independent large batch of ``B``::

        V = mean_k ||g_b,k - g_B||^2,    E[V] = tr(Sigma) (1/b + 1/B)

    so ``tr(Sigma) = V / (1/b + 1/B)`` is an unbiased per-sequence trace."""
    large = large_grad.double()
    return torch.stack([sqnorm(g.double() - large) for g in small_grads]).mean()


def mean_gradient(
    model: torch.nn.Module,
    batch: Tensor,
    params: list[Tensor] | None = None,
    chunk: int = 32,
    autocast=contextlib.nullcontext,
) -> list[Tensor]:
    """The gradient of the mean token loss over ``batch`` (sequences ``(n, T)``) for ``params``
    (default: every parameter), in chunks of ``chunk`` sequences weighted by their share.

    Uses ``torch.autograd.grad``: ``.grad`` is left untouched, so it can run in the middle of
    a training step (the paper's probe does). A parameter the loss does not reach gets zeros.
    """
    params = list(model.parameters()) if params is None else params
    total = None
    for part in batch.split(chunk):
        with autocast():
            loss = model(input_ids=part, labels=part).loss * (part.size(0) / batch.size(0))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, params)]
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
    return total


def per_example_grads(model: torch.nn.Module, batch: Tensor) -> dict[str, Tensor]:
    """Exact gradient of each sequence's token-mean loss: ``{name: (n, *param.shape)}``.

    Uses ``torch.func`` (``vmap(grad(loss))`` over ``functional_call``); materializes
    ``n x parameters``, so it is for tiny models and tests.
    """
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, seq):
        seq = seq.unsqueeze(0)
        return functional_call(model, p, args=(), kwargs={"input_ids": seq, "labels": seq}).loss

    with warnings.catch_warnings():
        # vmap over CPU attention falls back to a loop with a "please file an issue" warning:
        # slower, the same numbers, and known (torch's batching rules for SDPA)
        warnings.filterwarnings(
            "ignore",
            message="There is a performance drop because we have not yet implemented the batching rule",
        )
        return vmap(grad(loss), in_dims=(None, 0), randomness="same")(params, batch)


def norm64(x: Tensor) -> Tensor:
    """``||x||_2`` as float64 (row sums in float32, their total in float64: ``sqnorm``)."""
    return sqnorm(x).sqrt()


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """``<a, b> / (||a|| ||b||)`` as a float64 0-d tensor."""
    # BLAS dot, no product temporary; a cosine does not cancel, so float32 sums suffice
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    dot = torch.vdot(a.reshape(-1).to(dtype), b.reshape(-1).to(dtype)).double()
    return dot / (norm64(a) * norm64(b)).clamp_min(1e-300)


def paper_probe(
    model: torch.nn.Module,
    named: list[tuple[str, Tensor]],
    roles: dict[str, str],
    data,
    cfg,
    step: int,
    autocast=contextlib.nullcontext,
) -> list[tuple]:
    """The SCALE paper's probe (arXiv 2506.16659) at ``step``: ``cfg.probe_repeats`` mean
    gradients of ``cfg.probe_small`` sequences against one of ``cfg.probe_large``, drawn from
    ``data.train`` (a generator seeded by the step, so a resumed run draws the same), giving per
    parameter ``probe_var`` (estimator b), ``probe_var_rel`` (over ``||g_large||^2``),
    ``probe_trace`` (the per-sequence trace, ``var / (1/b + 1/B)``) and the two-batch noise scale
    (``probe_*``, estimator c). Rows ``(step, param, role, stat, value)``; ``.grad`` and the
    RNG are untouched (``mean_gradient``; ``fork_rng``)."""
    rng = np.random.default_rng(1_000_003 * step + 17)
    n = len(data.train)

    def mean_grad(rows, chunk: int = 32):
        # rows sorted within each chunk (sequential reads of the token array)
        order = np.concatenate([np.sort(rows[i : i + chunk]) for i in range(0, len(rows), chunk)])
        batch = torch.from_numpy(data.train[order].astype(np.int64)).to(named[0][1].device)
        return mean_gradient(model, batch, [p for _, p in named], chunk, autocast)

    b, big = cfg.probe_small, min(cfg.probe_large, n)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        large = mean_grad(rng.choice(n, big, replace=False))
        smalls = [mean_grad(rng.choice(n, b, replace=False)) for _ in range(cfg.probe_repeats)]
    scalars = []
    for i, (name, _) in enumerate(named):
        var = probe_variance([s[i] for s in smalls], large[i])
        sq_large = sqnorm(large[i])
        sq_small = torch.stack([sqnorm(s[i]) for s in smalls]).mean()
        stats = {
            "probe_var": var,
            "probe_var_rel": var / sq_large.clamp_min(1e-300),
            "probe_trace": var / (1.0 / b + 1.0 / big),
        }
        stats.update({f"probe_{k}": v for k, v in noise_scale(sq_small, b, sq_large, big).items()})
        scalars += [(name, roles[name], stat, v) for stat, v in stats.items()]
    values = torch.stack([v.double().reshape(()) for *_, v in scalars]).cpu().tolist()
    return [(step, p, r, s, v) for (p, r, s, _), v in zip(scalars, values)]
