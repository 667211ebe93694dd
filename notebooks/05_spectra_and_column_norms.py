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
RECOMPUTE = os.environ.get("SCALE_LAB_RECOMPUTE") == "1"  # True: train fresh runs instead of reading the shipped reference recordings

# %% [markdown]
# # 05 · What the updates look like: column-norm statistics and spectra
#
# Two lenses on an update matrix $U$ (what the optimizer adds, divided by the lr):
#
# * **per-unit norms**: the RMS of each output unit's update. Column normalization makes
#   them all 1 by construction; SGD's are as uneven as the gradient's, and on the LM head
#   they follow token frequency;
# * **singular values**: how many directions the update uses. The stable rank
#   $\|U\|_F^2 / \|U\|_2^2$ is 1 for a rank-one step and $\min(m, n)$ for an orthogonal one.
#   Newton-Schulz (spectral_norm, Muon) flattens the spectrum; column normalization does not.
#
# The instrumentation records both (`analysis.instrument.hooks`; schedules in `analysis.instrument.schedule`).

# %%
from analysis.results import figures
from analysis.reproduce import recordings

runs = recordings(recompute=RECOMPUTE, smoke=SMOKE)
rec = figures.Recordings(runs)
figures.column_norm_stats(rec)

# %%
figures.update_spectra(rec)

# %%
cv = rec.stat("update_row_rms_cv")
cv_last = (cv[cv["step"] == cv.groupby("run")["step"].transform("max")]
           .groupby(["label", "role"])["value"].mean().unstack())
cv_last

# %%
rank = rec.stat("update_stable_rank")
rank_by_label = rank[rank["role"] == "hidden"].groupby("label")["value"].mean().sort_values()
rank_by_label

# %% [markdown]
# ## What this notebook shows (checked)

# %%
# column normalization: every output unit's update has the same RMS (up to float rounding)
for label in ["col_norm", "scale"]:
    assert cv_last.loc[label, ["embedding", "hidden"]].max() < 1e-5
assert cv_last.loc["scale", "output"] < 1e-5          # momentum is normalized too
assert cv_last.loc["sgd", "output"] > 1.0              # SGD's LM-head rows are very uneven
# orthogonalized updates use many more directions than normalized or raw ones
for flat in ["spectral_norm", "muon"]:
    for other in ["sgd", "col_norm", "scale", "adamw"]:
        assert rank_by_label[flat] > 3 * rank_by_label[other], (flat, other)
