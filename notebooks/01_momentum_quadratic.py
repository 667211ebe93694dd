# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

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
import os

SMOKE = os.environ.get("SCALE_LAB_SMOKE") == "1"  # True: small and fast (what CI runs)
SOLUTIONS = os.environ.get("SCALE_LAB_SOLUTIONS") == "1"  # True: fill in the exercises' solutions

# %%
import numpy as np
import torch
from IPython.display import display

from analysis.optim.maths import as_tensor
from analysis.optim.transforms import chain, momentum, normalize
from analysis.results import figures
from analysis.teaching import exercises, widgets
from toy_models import quadratic

steps = 300 if SMOKE else 2000
repeats = 128 if SMOKE else 512
figures.show("momentum_quadratic", steps=steps)

# %% [markdown]
# Solid lines are simulations (mean over noise draws); dotted lines are the **exact**
# stationary losses. Per coordinate, $(x, m)$ is a linear system driven by white noise, so
# its stationary covariance solves a discrete Lyapunov equation (`quadratic.ema_floor`).
# At the same learning rate, momentum lowers the floor; by how much, and how little a larger
# $\beta$ adds, is what the cell below prints.

# %%
sigma = 0.3
floors = {beta: quadratic.ema_floor(1.0, beta, sigma) for beta in (0.0, 0.5, 0.9, 0.95)}
simulated = {
    beta: quadratic.run(steps=steps, lr=1.0, beta=beta, sigma=sigma, repeats=repeats)[-steps // 3 :].mean()
    for beta in floors
}
for beta in floors:
    print(
        f"beta {beta:<5} exact floor {floors[beta]:.4f}   simulated {simulated[beta]:.4f}   "
        f"{1 - floors[beta] / floors[0.0]:.0%} below SGD's"
    )

# %% [markdown]
# The EMA of white noise keeps a fraction $(1-\beta)/(1+\beta)$ of its variance: about 5% at
# $\beta = 0.9$ (checked below). Yet the floor above falls by far less than 95%: $x$ itself
# averages its noise over about $1/(\eta h)$ steps, and the slow part of the noise, which is
# what moves $x$, passes through an EMA almost unchanged. So momentum's gain is largest where
# steps are large (the prediction below), and SCALE spends its only state on the layer whose
# gradient is noisiest (notebook 03).

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
# ## Explore: lr, beta and noise against the floor and the eigenvalues
#
# Per coordinate with curvature $h$, $(m, x)$ evolves by a 2x2 matrix
# (`quadratic.transition`). Its two eigenvalues say how fast that coordinate's error
# shrinks: inside the unit circle it converges, on or outside it the loss blows up. Move the
# sliders: with momentum the eigenvalues turn complex (the loss oscillates) and stay inside
# the circle at learning rates where SGD's leave it. (Without a live notebook, as in CI or the
# HTML pages, the figure is drawn once at the starting values.)

# %%
widgets.explore(
    widgets.momentum_explorer,
    lr=(1.0, 0.05, 3.0, 0.05),
    beta=(0.9, 0.0, 0.99, 0.01),
    sigma=(0.3, 0.0, 1.0, 0.05),
)

# %% [markdown]
# ### Predict, then check
# At lr 1 momentum 0.9 lowers the floor by about 30%. **Predict:** at lr 0.1, a tenth of the
# step, is momentum's gain (SGD's floor divided by momentum's) larger, about the same, or smaller?

# %%
lrs = [0.1, 0.3, 1.0, 1.5]
gain = {lr: quadratic.ema_floor(lr, 0.0, sigma) / quadratic.ema_floor(lr, 0.9, sigma) for lr in lrs}
for lr in lrs:
    print(f"lr {lr:<4} SGD floor / momentum floor = {gain[lr]:.3f}")

# %% [markdown]
# Smaller: at a small lr SGD already averages its noise over many steps, so momentum adds
# little; the gain grows with the lr. Momentum's benefit is a large-step effect, which is why
# it matters most where the steps are large relative to the noise: SCALE's normalized updates.

# %% [markdown]
# ## The (lr, β) map: speed without noise, the floor with it
#
# Without noise, EMA momentum is Polyak's heavy ball with step $\alpha = \eta(1-\beta)$: each
# coordinate's error obeys $\lambda^2 - (1 + \beta - \alpha h)\lambda + \beta = 0$. Its roots
# are complex, with $|\lambda| = \sqrt\beta$, for $(1-\sqrt\beta)^2 < \alpha h < (1+\sqrt\beta)^2$:
# the lower edge is **critical damping**. With condition number $\kappa = h_{max}/h_{min}$ the
# fastest rate, $(\sqrt\kappa - 1)/(\sqrt\kappa + 1)$, needs $\beta^* =
# \big((\sqrt\kappa-1)/(\sqrt\kappa+1)\big)^2$ and $\alpha^* = 4/(\sqrt{h_{max}}+\sqrt{h_{min}})^2$
# (Goh, "Why Momentum Really Works", Distill 2017). The cell computes them for this quadratic and
# compares momentum with SGD at the explorer's default lr.

# %%
lr_opt, beta_opt, rate_opt = quadratic.optimal_momentum()
kappa = 1 / quadratic.curvatures()[0]
sgd_rates = {lr: quadratic.contraction(lr, 0.0) for lr in np.linspace(0.05, 1.99, 40)}
sgd_best = min(sgd_rates.values())
at_default = {beta: quadratic.contraction(1.0, beta) for beta in (0.0, 0.9)}
print(
    f"condition number {kappa:.0f}: optimal beta {beta_opt:.3f} at lr {lr_opt:.3g} (step "
    f"lr(1-beta) = {lr_opt * (1 - beta_opt):.3g}), rate {rate_opt:.4f} per step; SGD's best rate "
    f"{sgd_best:.4f}: momentum needs {np.log(sgd_best) / np.log(rate_opt):.3f} of SGD's steps per e-fold"
)
print(
    f"at the explorer's default lr 1: max |eigenvalue| SGD {at_default[0.0]:.4f}, momentum 0.9 "
    f"{at_default[0.9]:.4f}"
)
display(widgets.momentum_map(sigma=sigma, points=15 if SMOKE else 41))

# %% [markdown]
# What the default shows, said plainly: at a **fixed** lr this EMA momentum does not speed
# convergence (its step is $\eta(1-\beta)$, so its slowest eigenvalue is SGD's, to the third
# decimal above); where it helps is the noise floor (the right panel falls with $\beta$ at a
# fixed lr). Speed comes only with a larger lr, which momentum keeps stable up to
# $\alpha h < 2(1+\beta)$: the optimum sits far to the right of SGD's stable region. SCALE uses
# momentum for the floor: its steps are normalized, so the lr is set by the schedule, not by
# stability.

# %% [markdown]
# ### Exercise (implement): SGD's floor in closed form
# For $\beta = 0$ the Lyapunov equation has a closed form. Each coordinate's error follows
# $x' = (1 - \eta h) x - \eta \sqrt{h}\,\sigma \xi$; write its stationary variance, then
# the loss $\tfrac12 \sum_i h_i\, \mathbb{E}[x_i^2]$ over `quadratic.curvatures()`.


# %%
def sgd_floor(lr, sigma):
    raise NotImplementedError("your code: the stationary loss of SGD at this lr and noise")


# %%
if SOLUTIONS:  # the tests fill in the solution, kept apart in analysis.teaching.solutions
    from analysis.teaching.solutions import sgd_floor
passed = exercises.grade("sgd_floor", sgd_floor)

# %% [markdown]
# ## Momentum before normalization: SCALE's placement
#
# SCALE applies momentum to the output layer's **gradient** and normalizes the average:
# $U = \mathrm{normalize}(m)$. The other order, averaging already-normalized gradients, is not
# the same rule: when successive gradients disagree (noise), the average of unit-size steps
# is *shorter* than one, so the step shrinks with the noise, an lr schedule nobody chose.
# Below: a fixed true gradient plus noise ten times its size, one row per output unit.

# %%
gen = torch.Generator().manual_seed(0)
true = torch.randn(16, 64, generator=gen, dtype=torch.float64)
stream = [
    true + 10 * torch.randn(16, 64, generator=gen, dtype=torch.float64) for _ in range(60 if SMOKE else 400)
]
before, after = chain(momentum(0.9), normalize(1)), chain(normalize(1), momentum(0.9))
state_before, state_after = before.init(true), after.init(true)
for g in stream:
    u_before = as_tensor(before.update(g, state_before, g))
    u_after = as_tensor(after.update(g, state_after, g))


def row_cosine(u):
    return float(torch.nn.functional.cosine_similarity(u, true, dim=1).mean())


placement = {
    "no momentum": (1.0, row_cosine(stream[-1])),
    "momentum, then normalize (SCALE)": (
        float(u_before.square().mean(1).sqrt().mean()),
        row_cosine(u_before),
    ),
    "normalize, then momentum": (float(u_after.square().mean(1).sqrt().mean()), row_cosine(u_after)),
}
for name, (rms, cos) in placement.items():
    print(f"{name:<34} step RMS per row {rms:.3f}   cosine with the true gradient {cos:.3f}")

# %% [markdown]
# Both orders average the noise (higher cosine than no momentum), but only SCALE's keeps
# the step at unit RMS: normalizing last is what fixes the step's size.
#
# ### Exercise (implement): SCALE's output rule over a stream of gradients
# Return one direction per gradient: EMA momentum $m \leftarrow \beta m + (1-\beta) g$
# (zero start), then each row of $m$ divided by its RMS (floored at $10^{-8}$).


# %%
def momentum_before_normalization(grads, beta):
    raise NotImplementedError("your code: a list with one direction per gradient")


# %%
if SOLUTIONS:
    from analysis.teaching.solutions import momentum_before_normalization
passed = exercises.grade("momentum_before_normalization", momentum_before_normalization)

# %% [markdown]
# ## What this notebook shows (checked)

# %%
# the exact floor is what the simulation reaches (within Monte-Carlo error)
for beta in floors:
    assert abs(simulated[beta] / floors[beta] - 1) < 0.15, (beta, simulated[beta], floors[beta])
# at a fixed lr EMA momentum does not converge faster; at its own best lr and beta it does
assert abs(at_default[0.9] - at_default[0.0]) < 0.005 and rate_opt < sgd_best
assert abs(quadratic.contraction(lr_opt, beta_opt) - rate_opt) < 1e-9  # the closed form is the optimum
# more momentum, lower noise floor at the same learning rate
assert floors[0.0] > floors[0.5] > floors[0.9] > floors[0.95]
# the EMA keeps (1 - beta) / (1 + beta) of white noise's variance
assert abs(measured_ratio / quadratic.direction_noise_ratio(0.9) - 1) < 0.1
# momentum's gain in floor grows with the lr: small at lr 0.1, large at lr 1
assert all(gain[a] < gain[b] for a, b in zip(lrs, lrs[1:])) and gain[0.1] < 1.05 and gain[1.0] > 1.3
# momentum before normalization: unit steps and less noise; after it, steps shrink with the noise
assert abs(placement["momentum, then normalize (SCALE)"][0] - 1) < 1e-9
assert placement["normalize, then momentum"][0] < 0.6
assert placement["momentum, then normalize (SCALE)"][1] > 2 * placement["no momentum"][1]
