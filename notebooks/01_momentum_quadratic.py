# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %%
import os

SMOKE = os.environ.get("SCALE_LAB_SMOKE") == "1"  # True: small and fast (what CI runs)

# %% [markdown]
# # 01 · Momentum on a noisy quadratic
#
# SCALE keeps momentum on one layer only. Before asking *which* layer, we look at what
# momentum does to noise in the smallest model where noise matters: a quadratic
# $f(x) = \tfrac12 \sum_i h_i x_i^2$ whose gradients carry noise $\sqrt{h_i}\,\sigma\,\xi$
# (the noisy quadratic model). The update is SCALE's EMA momentum,
# $m \leftarrow \beta m + (1-\beta) g$, $x \leftarrow x - \eta m$; $\beta = 0$ is plain SGD.
#
# Everything here is in `toy_models.quadratic`; the figure is `analysis.results.figures.momentum_quadratic`.

# %%
import numpy as np

from analysis.results import figures
from toy_models import quadratic

steps = 300 if SMOKE else 2000
repeats = 128 if SMOKE else 512
figures.momentum_quadratic(steps=steps)

# %% [markdown]
# Solid lines are simulations (mean over noise draws); dotted lines are the **exact**
# stationary losses. Per coordinate, $(x, m)$ is a linear system driven by white noise, so
# its stationary covariance solves a discrete Lyapunov equation (`quadratic.ema_floor`).
# At the same learning rate, momentum lowers the floor: it averages about $1/(1-\beta)$
# gradients before moving $x$.

# %%
sigma = 0.3
floors = {beta: quadratic.ema_floor(1.0, beta, sigma) for beta in (0.0, 0.5, 0.9, 0.95)}
simulated = {beta: quadratic.run(steps=steps, lr=1.0, beta=beta, sigma=sigma, repeats=repeats)[-steps // 3:].mean()
             for beta in floors}
for beta in floors:
    print(f"beta {beta:<5} exact floor {floors[beta]:.4f}   simulated {simulated[beta]:.4f}")

# %% [markdown]
# The mechanism in one number: the EMA of white noise keeps a fraction
# $(1-\beta)/(1+\beta)$ of the noise variance. With $\beta = 0.9$ that is about 5%.
# SCALE spends its only state on the layer whose gradient is noisiest (notebook 03).

# %%
rng = np.random.default_rng(0)
noise = rng.standard_normal((4000 if SMOKE else 40000, 64))
ema = np.zeros(64)
kept = []
for t, xi in enumerate(noise):
    ema = 0.9 * ema + 0.1 * xi
    if t > 100:
        kept.append(ema.copy())
measured_ratio = np.var(kept) / np.var(noise)
print(f"EMA variance ratio: measured {measured_ratio:.4f}, theory {quadratic.direction_noise_ratio(0.9):.4f}")

# %% [markdown]
# ## What this notebook shows (checked)

# %%
# the exact floor is what the simulation reaches (within Monte-Carlo error)
for beta in floors:
    assert abs(simulated[beta] / floors[beta] - 1) < 0.15, (beta, simulated[beta], floors[beta])
# more momentum, lower noise floor at the same learning rate
assert floors[0.0] > floors[0.5] > floors[0.9] > floors[0.95]
# the EMA keeps (1 - beta) / (1 + beta) of white noise's variance
assert abs(measured_ratio / quadratic.direction_noise_ratio(0.9) - 1) < 0.1
