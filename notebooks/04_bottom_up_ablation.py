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
RECOMPUTE = os.environ.get("SCALE_LAB_RECOMPUTE") == "1"  # True: train the ladder yourself (quick preset: seed 0 of the reference, about 6 minutes on 2 cores)

# %% [markdown]
# # 04 · The bottom-up ablation: SGD → column normalization → + output momentum
#
# The paper builds SCALE in two steps from plain SGD, and checks each against Adam:
#
# 1. normalize each output unit's gradient (column-wise, notebook 02): the step no longer
#    depends on the gradient's scale, which differs by orders of magnitude across layers and
#    across vocabulary rows;
# 2. add momentum on the output layer only, the noisiest layer (notebook 03).
#
# Every rung is a recipe (`scale-lab train --optimizer list`); `scale-lab reproduce` trains
# them all, each at its own tuned learning rate. Here we read the reference recordings
# (3 seeds), or train them with `RECOMPUTE = True`.

# %%
from analysis.results import claims, figures, stats
from analysis.optim.recipes import recipe_table
from analysis.reproduce import recordings

print(recipe_table())

# %%
runs = recordings(recompute=RECOMPUTE, smoke=SMOKE)
rec = figures.Recordings(runs)
table = stats.summary(rec.results)
table

# %%
figures.loss_curves(rec)

# %%
figures.normalization_ablation(rec)

# %% [markdown]
# ## The claims, with their numbers
#
# Each claim has a rule fixed in `analysis.results.report` before looking at results; intervals are
# Student-t 95% over seeds, differences paired by seed. A claim that does not hold at this
# scale is reported as such.

# %%
checked = claims.all_claims(runs, rec.results, rec.side_file("reference_losses.json"))
for c in checked:
    print(f"- {c.title}: {c.verdict}\n    {c.evidence}")

# %% [markdown]
# **What differs from the paper at this scale** (1.1M parameters, 300 steps, 3 seeds; read
# the numbers above): plain SGD *does* train at its tuned learning rate, just worse than
# column normalization; row-wise normalization beats column-wise here (the paper finds the
# opposite at 60M-350M); and SCALE ends below AdamW, whose seeds spread widely at its tuned
# lr. The two steps of the argument (normalize, then add output momentum) both hold with
# intervals that exclude zero.
#
# ## What this notebook shows (checked)

# %%
loss = table["loss"]
# step 1: column normalization beats plain SGD
assert loss["col_norm"] < loss["sgd"]
# step 2: output-layer momentum improves column normalization
assert loss["scale"] < loss["col_norm"]
diff, half, seeds = stats.paired(rec.results, "scale", "col_norm")
assert seeds >= 3 and diff + half < 0        # ... by more than the seed-to-seed interval
# at this scale, tuned plain SGD still trains: the paper's "SGD does not train" is reported, not assumed
assert checked[1].title == "Plain SGD does not train" and checked[1].held is False
# SCALE keeps a fraction of AdamW's optimizer state
assert table.loc["scale", "state_mb"] < 0.3 * table.loc["adamw", "state_mb"]
