"""Statistics of matrices: per-unit norm summaries (one value per output unit's fan-in) and
singular-value spectra.

Row statistics: ``r_i = rms(U[i, :])``, the per-output-unit scale that SCALE divides by
(torch row ``i`` of an ``(out, in)`` weight; for the embedding, pass the fan-in axis 0 so each
hidden feature is one "row"). Summaries: min, max, mean, std, coefficient of variation
``std / mean`` and the 5/50/95% quantiles.

Spectral statistics of singular values ``s_1 >= s_2 >= ... >= 0``:

- stable rank ``sum s_i^2 / s_1^2`` (= ||U||_F^2 / ||U||_2^2; 1 for rank one, n for I_n);
- effective rank ``exp(H(p))`` with ``p_i = s_i / sum s_j`` (Roy & Vetterli 2007; n for I_n);
- top-k energy ``sum_{i<=k} s_i^2 / sum s_i^2``;
- the normalized spectrum ``s / s_1``.

Paths: ``svdvals`` (all values; float64 on request), ``gram_eigvalsh`` (eigenvalues of the
smaller Gram matrix in float64, cheaper for very wide matrices) and ``topk`` via
``torch.svd_lowrank`` with a fixed seed (large matrices, top values only).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

QUANTILES = (0.05, 0.5, 0.95)


def row_rms(row_sums: Tensor, fan_in: int) -> Tensor:
    """One RMS per output unit, ``sqrt(row_sums / fan_in)`` (float32), from a matrix's sums of
    squares over its fan-in axes (``estimators.sqnorm(x, dim)``, which the instrumentation
    reduces once for the variance, the norms and these)."""
    return (row_sums / fan_in).sqrt().float()


def summarize(values, prefix: str) -> dict[str, float]:
    """min, max, mean, std, cv and quantiles of a vector (a host array or a tensor), in
    float64 on the host.

    The instrumentation summarizes a step's row vectors here after one transfer
    (``Instrumentation._to_host``): a few numpy calls per vector where the same summary as
    0-d tensors took about 30 tensor operations (on the CPU, 0.4 ms a vector against 0.02).
    One sort gives min, max and the quantiles (linear interpolation between the two nearest
    ranks, as ``torch.quantile``)."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    n = v.size
    mean = float(v.mean())
    std = float(v.std())
    stats = {
        f"{prefix}_min": float(v[0]),
        f"{prefix}_max": float(v[-1]),
        f"{prefix}_mean": mean,
        f"{prefix}_std": std,
        f"{prefix}_cv": std / max(mean, 1e-30),
    }
    for q in QUANTILES:
        pos = q * (n - 1)
        low = int(math.floor(pos))
        high = min(low + 1, n - 1)
        stats[f"{prefix}_q{int(q * 100):02d}"] = float(v[low] + (v[high] - v[low]) * (pos - low))
    return stats


def singular_values(x: Tensor, method: str = "svdvals", k: int | None = None, dtype=torch.float32) -> Tensor:
    """Singular values in descending order by ``svdvals``, ``gram`` (eigvalsh) or ``topk``."""
    m = x.reshape(x.size(0), -1).to(dtype)
    if method == "svdvals":
        return torch.linalg.svdvals(m)
    if method == "gram":
        small = m @ m.T if m.size(0) <= m.size(1) else m.T @ m
        eig = torch.linalg.eigvalsh(small.double()).clamp_min(0).sqrt()
        return eig.flip(0).to(dtype)
    if method == "topk":
        k = k or 16
        q = min(k + 8, min(m.shape))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _, s, _ = torch.svd_lowrank(m, q=q, niter=2)
        return s[:k]
    raise ValueError(f"unknown singular value method {method!r}; use svdvals, gram or topk")


def stable_rank(s: Tensor) -> Tensor:
    """``||U||_F^2 / ||U||_2^2 = sum s_i^2 / s_1^2`` from singular values ``s`` (descending)."""
    return s.double().square().sum() / s.double()[0].square().clamp_min(1e-300)


def effective_rank(s: Tensor) -> Tensor:
    """``exp(H(p))`` with ``p_i = s_i / sum s`` (Roy & Vetterli 2007): the entropy-based rank."""
    p = s.double() / s.double().sum().clamp_min(1e-300)
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


def topk_energy(s: Tensor, k: int, total_sq: Tensor | None = None) -> Tensor:
    """Share of ``||U||_F^2`` in the top ``k`` values (pass ``total_sq`` when ``s`` is truncated)."""
    s2 = s.double().square()
    total = s2.sum() if total_sq is None else total_sq.double()
    return s2[:k].sum() / total.clamp_min(1e-300)


def spectral_stats(s: Tensor, k: int = 16, total_sq: Tensor | None = None) -> dict[str, Tensor]:
    """Stable rank, effective rank (full spectra only) and top-k energy of a spectrum."""
    stats = {"sigma_max": s[0].double(), "topk_energy": topk_energy(s, k, total_sq)}
    if total_sq is None:
        stats["stable_rank"] = stable_rank(s)
        stats["effective_rank"] = effective_rank(s)
    else:
        stats["stable_rank"] = total_sq.double() / s.double()[0].square().clamp_min(1e-300)
    return stats


def log_spaced(n: int, count: int = 64) -> list[int]:
    """Up to ``count`` distinct log-spaced indices in ``[0, n)`` (to store long spectra small)."""
    if n <= count:
        return list(range(n))
    return sorted({min(n - 1, int(round(math.exp(i * math.log(n) / (count - 1))) - 1)) for i in range(count)})
