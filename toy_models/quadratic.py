"""A noisy quadratic: the smallest model where momentum's variance reduction is visible.

Loss ``f(x) = 1/2 sum_i h_i x_i^2`` with curvatures ``h_i`` log-spaced in ``[h_min, 1]``. The
stochastic gradient is ``g = h * x + sqrt(h) * sigma * xi`` with ``xi ~ N(0, I)`` (noise
covariance proportional to the curvature, as for a mini-batch gradient near a minimum: the
noisy quadratic model of Zhang et al., 2019).

The optimizer is the one SCALE puts on its output layer, EMA momentum:
``m <- beta m + (1 - beta) g``, ``x <- x - lr m`` (``beta = 0``: plain SGD). Per coordinate the
pair ``(x, m)`` is a linear system driven by white noise, so the stationary expected loss (the
noise floor) is exact: ``ema_floor`` solves its discrete Lyapunov equation. For SGD it reduces
to ``sum_i lr sigma^2 h_i / (4 (1 - lr h_i / 2))``. At the same lr, EMA momentum lowers the
floor on the coordinates where ``lr h_i`` is not small (it averages the noise over about
``1 / (1 - beta)`` steps before it moves ``x``), and its stability limit
``lr h < 2 (1 + beta) / (1 - beta)`` is ``(1 + beta) / (1 - beta)`` times SGD's ``lr h < 2``.
The EMA of white noise has variance ``(1 - beta) / (1 + beta)`` of the noise's
(``direction_noise_ratio``): the mechanism SCALE relies on for its noisiest layer.

Without noise the iteration is Polyak's heavy ball with step ``alpha = lr (1 - beta)``: each
coordinate's characteristic polynomial is ``lambda^2 - (1 + beta - alpha h) lambda + beta``
(``contraction``: the slowest coordinate's ``max |lambda|``, the convergence rate per step).
Its roots are complex, with ``|lambda| = sqrt(beta)``, for ``(1 - sqrt(beta))^2 < alpha h <
(1 + sqrt(beta))^2``: critical damping at the lower edge (``critical_damping``). With condition
number ``kappa = 1 / h_min`` the best rate, ``(sqrt(kappa) - 1) / (sqrt(kappa) + 1)``, comes at
``beta* = ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^2`` and ``alpha* = 4 / (1 + sqrt(h_min))^2``
(``optimal_momentum``; Polyak 1964; Goh, "Why Momentum Really Works", Distill 2017). At a
fixed ``lr`` the EMA form takes the step ``lr (1 - beta)``, so there momentum does not speed
convergence; what it buys at a fixed lr is the lower noise floor.
"""

from __future__ import annotations

import numpy as np


def curvatures(dim: int = 32, h_min: float = 1e-2) -> np.ndarray:
    """The quadratic's ``dim`` eigenvalues, log-spaced from ``h_min`` to 1."""
    return np.logspace(np.log10(h_min), 0.0, dim)


def run(
    steps: int = 500,
    lr: float = 0.5,
    beta: float = 0.0,
    sigma: float = 1.0,
    dim: int = 32,
    h_min: float = 1e-2,
    repeats: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Mean loss over ``repeats`` independent noise draws at steps ``0..steps`` (shape ``steps+1``)."""
    rng = np.random.default_rng(seed)
    h = curvatures(dim, h_min)
    x = np.ones((repeats, dim))
    m = np.zeros_like(x)
    losses = np.empty(steps + 1)
    losses[0] = 0.5 * (h * x**2).sum(1).mean()
    for t in range(1, steps + 1):
        g = h * x + np.sqrt(h) * sigma * rng.standard_normal(x.shape)
        m = beta * m + (1.0 - beta) * g
        x = x - lr * m
        losses[t] = 0.5 * (h * x**2).sum(1).mean()
    return losses


def transition(lr: float, beta: float, h: float, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One coordinate's linear system ``z' = A z + b xi`` with ``z = (m, x)``:
    ``m' = beta m + (1-beta)(h x + sqrt(h) sigma xi)``, ``x' = x - lr m'``. The iteration is
    stable when both eigenvalues of ``A`` lie inside the unit circle."""
    a = np.array([[beta, (1 - beta) * h], [-lr * beta, 1 - lr * (1 - beta) * h]])
    b = np.array([[(1 - beta) * np.sqrt(h) * sigma], [-lr * (1 - beta) * np.sqrt(h) * sigma]])
    return a, b


def eigenvalues(lr: float, beta: float, dim: int = 32, h_min: float = 1e-2) -> np.ndarray:
    """The two eigenvalues of ``transition`` for every curvature, shape ``(dim, 2)`` (complex):
    their modulus is the per-step contraction of that coordinate's error."""
    return np.array([np.linalg.eigvals(transition(lr, beta, hi)[0]) for hi in curvatures(dim, h_min)])


def ema_floor(lr: float, beta: float, sigma: float = 1.0, dim: int = 32, h_min: float = 1e-2) -> float:
    """Exact stationary expected loss of EMA momentum on the noisy quadratic.

    Per coordinate the pair ``(m, x)`` is the linear system of ``transition``, driven by white
    noise; its stationary covariance solves the discrete Lyapunov equation
    ``S = A S A^T + b b^T`` (solved with ``scipy.linalg.solve_discrete_lyapunov``); the loss is
    ``1/2 h S_xx``. Infinite where the iteration is unstable.
    """
    from scipy.linalg import solve_discrete_lyapunov

    total = 0.0
    for hi in curvatures(dim, h_min):
        a, b = transition(lr, beta, hi, sigma)
        if np.max(np.abs(np.linalg.eigvals(a))) >= 1:
            return float("inf")
        s = solve_discrete_lyapunov(a, b @ b.T)
        total += 0.5 * hi * s[1, 1]
    return total


def direction_noise_ratio(beta: float) -> float:
    """Stationary variance of the EMA of unit white noise: ``(1 - beta)^2 / (1 - beta^2)``."""
    return (1.0 - beta) / (1.0 + beta)


def contraction(lr: float, beta: float, dim: int = 32, h_min: float = 1e-2) -> float:
    """The convergence rate without noise: the largest eigenvalue modulus over every
    curvature's iteration (>= 1: the error does not shrink)."""
    return float(np.abs(eigenvalues(lr, beta, dim, h_min)).max())


def critical_damping(beta: float) -> float:
    """The ``alpha h = lr (1 - beta) h`` at which a coordinate is critically damped: below it
    the error decays without oscillating, above it (up to ``(1 + sqrt(beta))^2``) it rings
    with modulus ``sqrt(beta)``."""
    return (1.0 - np.sqrt(beta)) ** 2


def optimal_momentum(h_min: float = 1e-2) -> tuple[float, float, float]:
    """``(lr*, beta*, rate*)`` of the fastest noiseless convergence for curvatures in
    ``[h_min, 1]`` (heavy ball's optimum, written for the EMA form ``lr = alpha / (1 - beta)``)."""
    root = np.sqrt(1.0 / h_min)
    rate = (root - 1.0) / (root + 1.0)
    beta = rate**2
    alpha = 4.0 / (1.0 + np.sqrt(h_min)) ** 2
    return float(alpha / (1.0 - beta)), float(beta), float(rate)
