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
# # 08 · Design your own optimizer
#
# Every optimizer in this toolkit is a chain of small transforms per layer role
# (`analysis.optim.transforms`): `momentum`, `normalize` (unit RMS per output unit),
# `orthogonalize` (Newton-Schulz), `sign`, `scale_by_adam`, and `tap` (what the
# instrumentation records). SCALE is three short chains:

# %%
import os

SMOKE = os.environ.get("SCALE_LAB_SMOKE") == "1"  # True: small and fast (what CI runs)
SOLUTIONS = os.environ.get("SCALE_LAB_SOLUTIONS") == "1"  # True: fill in the exercises' solutions

# %%
import pandas as pd

from analysis.optim.designs import design, register_design
from analysis.optim.hyper import OptimizerConfig
from analysis.optim.inspection import group_rows
from analysis.optim.maths import as_tensor
from analysis.optim.recipes import build_optimizer, recipe_rows
from analysis.optim.transforms import chain, momentum, normalize
from analysis.optim.variants import hidden_rule, neuron_normalize, unit_rows
from analysis.protocol.arms import tuned_points
from analysis.results import stats
from analysis.teaching import exercises, race
from toy_models.llama import build_model, load_config

pd.set_option("display.max_colwidth", None)  # every rule in full
model = build_model(load_config("nano", vocab_size=512), seed=0)
pd.DataFrame(group_rows(build_optimizer("scale", model))).set_index("group")

# %% [markdown]
# ## Compose a design
#
# `design(hidden=..., embedding=..., output=...)` takes a transform per role, or a function of
# the matrix's fan-in axes (so "per output unit" is right for an `nn.Linear`'s rows and an
# `nn.Embedding`'s columns alike); vectors keep Adam. `register_design` makes it a recipe like
# any other: `build_optimizer`, the trainer, the recordings and the race take its name.
#
# The example: SCALE plus momentum on the embedding too, the second noisiest layer
# (notebook 03). Change it and run the cells below.

# %%
register_design(
    "scale+embedding",
    design(
        hidden=lambda fan_in: normalize(fan_in),
        embedding=lambda fan_in: chain(momentum(0.9), normalize(fan_in)),
        output=lambda fan_in: chain(momentum(0.9), normalize(fan_in)),
    ),
    "SCALE with momentum on the embedding too",
)
pd.DataFrame(recipe_rows()).set_index("name").loc[["scale", "scale+embedding"]]

# %% [markdown]
# ## The race
#
# Same model, data order, length and lr structure as the reference (the `quick` preset);
# SCALE and AdamW at the lr, beta2 and embedding/output multiplier their tuning chose at this
# length, read from the shipped reference recordings (checked to be the same configuration), on
# held-out seeds (100-102) that chose nothing, as the reference reports; your design trains now, a few
# minutes per seed on 2 cores (each run says when it starts), with SCALE's beta2 for its Adam
# part and multiplier, so it differs from SCALE only where you changed it. Leaderboard: mean final validation loss over seeds with a
# Student-t 95% interval, and the difference to SCALE paired by seed. In SMOKE mode (CI) the
# race is a seconds-long plumbing check on `nano` with one seed, not a finding.
#
# ### Predict, then check
# **Predict:** SCALE's lr was tuned for SCALE. At that lr, will the extra embedding momentum
# help, hurt, or not be distinguishable from seed noise in a race at the reference's length?

# %%
seeds = (0,) if SMOKE else (100, 101, 102)  # held out: the tuning saw seeds 0-1
scale_lr = tuned_points()["scale"][0]
runs = race.race({"scale+embedding": scale_lr}, seeds=seeds, preset="smoke" if SMOKE else "quick")
board = race.leaderboard(runs)
shown = pd.DataFrame(
    {
        "seeds": board["seeds"],
        "lr": board["lr"],
        "beta2": board["beta2"],
        "final val loss": [
            stats.fmt(m, h, 4) + ("" if n > 1 else " (1 seed)")
            for m, h, n in zip(board["loss"], board["loss_ci"], board["seeds"])
        ],
        "per seed": board["per_seed"],
        "seed std": board["seed_std"].round(4),
        "minus SCALE": [stats.fmt(m, h, 4) for m, h in zip(board["minus_scale"], board["minus_scale_ci"])],
    }
)
others = board["seed_std"].drop("adamw").median()
if len(seeds) > 1:
    print(
        f"AdamW's seeds: {board.loc['adamw', 'per_seed']} (std {board.loc['adamw', 'seed_std']:.4f}, "
        f"{board.loc['adamw', 'seed_std'] / others:.1f}x the others' median): "
        + (
            "as stable as the others."
            if board.loc["adamw", "seed_std"] <= 2 * others
            else "its seeds disagree more than twice as much as the others' (the report's stable-baseline "
            "gate): read every comparison with AdamW through its interval."
        )
    )
shown

# %%
curves = race.curves(runs)  # drawn by the inline backend

# %%
diff, half = board.loc["scale+embedding", ["minus_scale", "minus_scale_ci"]]
if len(seeds) < 2:
    print("Answer: not at one seed: there is no interval, so the race cannot separate the two here.")
elif stats.separated(diff, half):
    margin = abs(diff) - half  # how far the interval's nearer end is from 0
    print(
        f"Answer: the embedding momentum {'helps' if diff < 0 else 'hurts'}: {stats.fmt(diff, half, 4)} "
        f"nats against SCALE, an interval that excludes 0 by {margin:.4f} nats over {len(seeds)} seeds"
        + (" (barely: a seed more could move it)." if margin < 0.1 * abs(diff) else ".")
    )
else:
    print(
        f"Answer: indistinguishable from seed noise: {stats.fmt(diff, half, 4)} nats against SCALE, an "
        "interval that holds 0."
    )

# %% [markdown]
# Read the `minus_scale` column with its interval: an interval that contains 0 means the
# race cannot tell your design from SCALE at this budget, whatever the order of the means.
#
# ## Worked examples: three recent designs as chains
#
# Each is a recipe (`--optimizer rmnp|normuon|muoneq`), written from its paper's stated rule
# and tested against a plain transcription of it (`tests/analysis/test_variants.py`;
# `analysis/optim/variants.py` says what the papers leave open and the choice made):
#
# * **RMNP** (arXiv 2603.20527): momentum, then unit L2 norm per output unit, on hidden
#   matrices: SCALE's normalization with momentum everywhere but on the embedding and head;
# * **NorMuon** (arXiv 2510.05491): Muon's orthogonalized momentum, then an Adam-like second
#   moment per output unit, rescaled to RMS 0.2;
# * **MuonEq** (arXiv 2603.28254): rows equilibrated to unit norm *before* Newton-Schulz.

# %%
pd.Series(
    {
        name: next(r["rule"] for r in group_rows(build_optimizer(name, model)) if r["group"] == "hidden")
        for name in ("rmnp", "normuon", "muoneq")
    },
    name="hidden-matrix rule",
).to_frame()

# %% [markdown]
# One step of each on the same gradient, to see what each chain promises:

# %%
import torch  # noqa: E402

g = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)) * torch.logspace(-2, 0, 64).unsqueeze(1)
rmnp_step = unit_rows(1).update(g, {}, g).materialize()
nm = neuron_normalize()
normuon_step = nm.update(g, nm.init(g), g)
muoneq = hidden_rule("muoneq", OptimizerConfig(), (1,))
muoneq_step = as_tensor(muoneq.update(g, muoneq.init(g), g))
singular, before = torch.linalg.svdvals(muoneq_step), torch.linalg.svdvals(g)
print(f"RMNP rows' L2 norms: {rmnp_step.norm(dim=1).min():.4f}..{rmnp_step.norm(dim=1).max():.4f}")
print(f"NorMuon step RMS: {normuon_step.square().mean().sqrt():.4f}")
print(
    f"MuonEq step's singular values: {singular.min():.3f}..{singular.max():.3f}, a spread of "
    f"{singular.max() / singular.min():.1f}x where the gradient's is {before.max() / before.min():.0f}x "
    "(Newton-Schulz flattens the spectrum)"
)

# %% [markdown]
# ### Exercise (implement): RMNP's hidden-matrix rule
# Return RMNP's transform for a matrix with fan-in axes `fan_in`: EMA momentum with beta
# 0.95, then each output unit's row scaled to unit **L2** norm (`unit_rows(axis)`, not
# `normalize`, which gives unit RMS). The grader steps it beside the recipe's.


# %%
def rmnp_hidden(fan_in):
    raise NotImplementedError("your code: a transform chain")


# %%
if SOLUTIONS:  # the tests fill in the solution, kept apart in analysis.teaching.solutions
    from analysis.teaching.solutions import rmnp_hidden
passed = exercises.grade("rmnp_hidden", rmnp_hidden)

# %% [markdown]
# ## What this notebook shows (checked)

# %%
# the leaderboard has every entrant, over every seed, with the paired difference to SCALE
assert set(board.index) == {"scale", "adamw", "scale+embedding"}
assert (board["seeds"] == len(seeds)).all() and board.loc["scale", "minus_scale"] == 0
# the curves show every entrant and end at the leaderboard's losses
assert len(curves.axes[0].get_legend().get_texts()) == 3
if not SMOKE:  # the baselines are the shipped reference runs, and the intervals are real
    assert set(runs.query("label in ['scale', 'adamw']")["source"]) == {"reference recording"}
    assert board["loss_ci"].gt(0).all()
# each worked example keeps its promise: unit L2 rows, an update of RMS 0.2
assert torch.allclose(rmnp_step.norm(dim=1), torch.ones(64), atol=1e-5)
assert abs(float(normuon_step.square().mean().sqrt()) - 0.2) < 1e-5
assert singular.max() / singular.min() < 0.1 * before.max() / before.min()  # a flattened spectrum
