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
import os

SMOKE = os.environ.get("SCALE_LAB_SMOKE") == "1"  # True: small and fast (what CI runs)
SOLUTIONS = os.environ.get("SCALE_LAB_SOLUTIONS") == "1"  # True: fill in the exercises' solutions
RECOMPUTE = (
    os.environ.get("SCALE_LAB_RECOMPUTE") == "1"
)  # True: train fresh runs instead of reading the shipped reference recordings

# %%
from analysis.reproduce import notebook_runs
from analysis.results import figures
from analysis.teaching import exercises, widgets

runs = notebook_runs(recompute=RECOMPUTE, smoke=SMOKE)
rec = figures.RunSet(runs)
figures.show("column_norm_stats", rec)

# %% [markdown]
# ## Explore: the spectra over training
#
# The hidden updates' normalized singular values of every arm at a recorded step; slide
# through training. (Static where no live notebook runs: the last recorded step.)

# %%
widgets.explore(lambda step: widgets.spectrum_explorer(rec, step), step=widgets.spectrum_steps(rec))

# %%
figures.show("update_spectra", rec)

# %%
cv = rec.stat("update_row_rms_cv")
cv_last = (
    cv[cv["step"] == cv.groupby("run")["step"].transform("max")]
    .groupby(["label", "role"])["value"]
    .mean()
    .unstack()
)
# the spread of the update's row RMS across output units (coefficient of variation: std / mean)
# at each run's last recorded step; 0 when every output unit moves by the same RMS
cv_last.rename_axis(index="arm", columns="update row-RMS spread (std / mean), by role")

# %% [markdown]
# SCALE divides the output layer's momentum by $\max(\mathrm{rms}, 10^{-8})$. Rows whose
# momentum is smaller than that floor (tokens the model has learned not to predict, whose
# gradient rows are tiny) move less than one unit RMS, so once training has gone on the output
# layer's spread can leave float rounding. When, in these runs (and how far into each run):

# %%
out_cv = cv[(cv["label"] == "scale") & (cv["role"] == "output")].groupby("step")["value"].max()
floored = out_cv[out_cv > 1e-5]
run_steps = int(rec.results["steps"].max())
print(
    "scale's output-layer update rows: the same RMS up to float rounding "
    + (
        f"until step {floored.index[0]} of {run_steps} ({floored.index[0] / run_steps:.0%} of the run), "
        f"then a spread up to {floored.max():.2f} (rows under the floor)"
        if len(floored)
        else f"at every recorded step (to step {out_cv.index[-1]} of {run_steps})"
    )
)

# %%
rank = rec.stat("update_stable_rank")
rank_by_label = rank[rank["role"] == "hidden"].groupby("label")["value"].mean().sort_values()

# %% [markdown]
# ### Predict, then check
# **Predict:** a column-normalized update has every row at unit RMS. Does that make its
# spectrum flat (stable rank near $\min(m, n)$)? Compare `col_norm` with `spectral_norm` above.

# %%
ranks = {label: rank_by_label.get(label, float("nan")) for label in ("sgd", "col_norm", "spectral_norm")}
print(
    "stable rank of the hidden updates (mean over recorded steps): "
    + ", ".join(f"{k} {v:.1f}" for k, v in ranks.items())
)
flat_like = ranks["col_norm"] > 0.5 * ranks["spectral_norm"]
print(
    "Answer: "
    + (
        "yes, here col_norm's spectrum is nearly as flat as the orthogonalized update's."
        if flat_like
        else f"no: col_norm's stable rank is {ranks['col_norm'] / ranks['sgd']:.1f}x SGD's and "
        f"{ranks['col_norm'] / ranks['spectral_norm']:.2f}x spectral_norm's. Equal row "
        "lengths say nothing about the rows' directions, which stay as aligned as the "
        "gradient's."
    )
)

# %% [markdown]
# ### Exercise (implement): the stable rank
# Return $\|U\|_F^2 / \|U\|_2^2$ of a matrix (the squared singular values' sum over the
# largest one squared).


# %%
def stable_rank(update):
    raise NotImplementedError("your code: ||U||_F^2 / ||U||_2^2")


# %%
if SOLUTIONS:  # the tests fill in the solution, kept apart in analysis.teaching.solutions
    from analysis.teaching.solutions import stable_rank
passed = exercises.grade("stable_rank", stable_rank)

# %% [markdown]
# ## Per attention head
# A query matrix is `heads x head_dim` rows: are some heads much noisier than the others of
# the same matrix? `InstrumentConfig(per_head=True)` records each head's gradient variance
# (`analysis.instrument.heads`; the heads of a matrix sum to its own). A short SCALE run of the
# reference's model shape, recorded here (the shipped recordings have no heads):

# %%
import matplotlib.pyplot as plt  # noqa: E402
from IPython.display import display  # noqa: E402

from analysis.instrument.schedule import InstrumentConfig  # noqa: E402
from analysis.results.head_figures import per_head_variance  # noqa: E402
from analysis.training import TrainConfig, train  # noqa: E402

head_run = train(
    TrainConfig(
        model="nano" if SMOKE else "cpu60m-half",
        optimizer="scale",
        steps=4 if SMOKE else 60,
        batch_size=8,
        micro_batch_size=2,
        seq_len=64,
        eval_every=0,
        eval_tokens=1024,
        device="cpu",
        precision="fp32",
        instrument=InstrumentConfig(cheap_every=2, per_head=True),
    ),
    out="runs/notebook05-heads",
    overwrite=True,
    progress=False,
)
head_fig = per_head_variance(figures.RunSet(head_run.run_dir))
display(head_fig)
plt.close(head_fig)  # shown once (the inline backend would draw an open figure again)

# %% [markdown]
# ## What this notebook shows (checked)

# %%
# column normalization: every output unit's update has the same RMS (up to float rounding)
for label in ["col_norm", "scale"]:
    assert cv_last.loc[label, ["embedding", "hidden"]].max() < 1e-5
assert out_cv.iloc[0] < 1e-5  # momentum is normalized too (before rows reach the 1e-8 floor)
assert cv_last.loc["sgd", "output"] > 1.0  # SGD's LM-head rows are very uneven
# orthogonalized updates use many more directions than normalized or raw ones
for flat in ["spectral_norm", "muon"]:
    for other in ["sgd", "col_norm", "scale", "adamw"]:
        assert rank_by_label[flat] > 3 * rank_by_label[other], (flat, other)
# the predict cell's answer: equal row lengths leave the spectrum about as steep as SGD's
assert rank_by_label["col_norm"] < 3 * rank_by_label["sgd"]
# every attention matrix of the short run has a variance per head
assert head_fig.axes[0].images[0].get_array().shape[1] >= 2
