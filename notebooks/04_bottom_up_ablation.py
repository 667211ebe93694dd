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
# # 04 · The bottom-up ablation: SGD → column normalization → + output momentum
#
# The paper builds SCALE in two steps from plain SGD, and checks each against Adam:
#
# 1. normalize each output unit's gradient (column-wise, notebook 02): the step no longer
#    depends on the gradient's scale, which differs by orders of magnitude across layers and
#    across vocabulary rows;
# 2. add momentum on the output layer only, the noisiest layer (notebook 03).
#
# Every rung is a recipe (`scale-lab train --optimizer list`). The shipped reference recordings
# gave every arm the same tuning freedom at the reported length (which knobs, on which seeds,
# and which seeds report: printed below from the recordings themselves). Here we read them, or
# re-run one seed with `RECOMPUTE = True` (the `quick` preset's setting, every arm). Which
# regime they are in (how many tokens per parameter, whether the runs had finished learning)
# decides what they can say: the report's gates, printed below, come first.

# %%
import os

SMOKE = os.environ.get("SCALE_LAB_SMOKE") == "1"  # True: small and fast (what CI runs)
SOLUTIONS = os.environ.get("SCALE_LAB_SOLUTIONS") == "1"  # True: fill in the exercises' solutions
RECOMPUTE = (
    os.environ.get("SCALE_LAB_RECOMPUTE") == "1"
)  # True: train the ladder yourself (seed 100 of every arm at the reference's setting, about 25 minutes on 2 cores)

# %%
import numpy as np
import pandas as pd

from analysis.optim.recipes import recipe_rows
from analysis.reproduce import notebook_runs
from analysis.results import claims, figures, report, stats
from analysis.results.gates import all_gates
from analysis.teaching import exercises

# the rungs of this notebook (the full table: scale-lab train --optimizer list); the tuned lrs
# the recordings used are in the results table further down
rungs = pd.DataFrame(recipe_rows()).set_index("name")[["lr", "description", "state"]]
rungs = rungs.rename(columns={"lr": "recipe's default lr"})
rungs.loc[["sgd", "sign", "row_norm", "col_norm", "spectral_norm", "scale", "adamw"]]

# %% [markdown]
# ### Exercise (implement): SCALE from transforms
# Each rung is a small chain of transforms (`analysis.optim.transforms`: `normalize(axis)`,
# `momentum(beta)`, `chain(...)`). Return SCALE's rule for the three matrix roles as a dict
# `{"hidden": ..., "embedding": ..., "output": ...}`: one unit RMS per output unit on every
# matrix (which axis is that for an `nn.Embedding` of shape (vocab, d)?), and momentum 0.9 on
# the output layer only, applied before its normalization. The grader steps yours and the
# library's side by side.

# %%
from analysis.optim.transforms import chain, momentum, normalize  # noqa: E402,F401 (for your answer)


def scale_rules():
    raise NotImplementedError("your code: {role: transform} for hidden, embedding, output")


# %%
if SOLUTIONS:  # the tests fill in the solution, kept apart in analysis.teaching.solutions
    from analysis.teaching.solutions import scale_rules
passed = exercises.grade("scale_rules", scale_rules)

# %%
runs = notebook_runs(recompute=RECOMPUTE, smoke=SMOKE)
rec = figures.RunSet(runs)
table = stats.summary(rec.results)
tuning = rec.side_file("tuning.json") or {}
tune_seeds = tuning.get("tune_seeds", [])
reported = sorted({int(s) for s in rec.results["seed"]})
print(
    f"tuned on seed{'s' if len(tune_seeds) != 1 else ''} {tune_seeds or 'none (not tuned here)'}; "
    f"reported on seeds {reported}"
    + ("; the seeds that chose each point also report it" if set(tune_seeds) & set(reported) else "")
)
print("\n".join(report.regime_lines(rec.root, rec.results)))
table

# %% [markdown]
# ### Predict, then check
# **Predict:** of the gap between plain SGD and AdamW in final loss, how much does column
# normalization alone close: a tenth, half, or nearly all of it?

# %%
gap = table.loc["sgd", "loss"] - table.loc["adamw", "loss"]
closed = (table.loc["sgd", "loss"] - table.loc["col_norm", "loss"]) / gap
closed_scale = (table.loc["sgd", "loss"] - table.loc["scale", "loss"]) / gap
print(
    f"column normalization closes {closed:.0%} of the SGD-AdamW gap ({gap:.3f} nats); SCALE: {closed_scale:.0%}"
)

# %%
matches = claims.adamw_claim(rec.results, claims.adamw_spread_gate(rec.results).passed)
if gap <= 0:
    print("Answer: here SGD is not behind AdamW, so there is no gap to close: too short a run to ask.")
else:
    size = "a tenth or less" if closed < 0.2 else "about half" if closed < 0.7 else "nearly all of it"
    print(
        f"Answer: {size} ({closed:.0%}, by the means). With output-layer momentum SCALE's mean sits at "
        f"{closed_scale:.0%} of the way; whether that matches AdamW is a question for the interval, "
        f"not the means (claim 6): {matches.verdict}, {matches.evidence}."
    )

# %% [markdown]
# **Step 1, plain SGD against normalized updates** (the paper's Figure 2), each at its tuned lr:

# %%
figures.show("sgd_vs_normalized", rec)

# %%
figures.show("loss_curves", rec)

# %%
figures.show("normalization_ablation", rec)

# %% [markdown]
# **Step 2, where the one momentum buffer goes**: none, the output layer (SCALE), the embedding,
# or every layer (column normalization throughout), with the state each keeps.

# %%
figures.show("momentum_placement", rec)

# %% [markdown]
# ## How each arm was tuned
#
# Final validation loss against the peak lr, on the tuning seeds (printed above); the ringed
# point is the lr reported. An optimum at the edge of its grid would mean the arm was
# under-tuned: the cell names every arm whose optimum is at an edge or not bracketed.

# %%
if tuning:
    figures.show("lr_sweep", rec)
    edge = [label for label, row in tuning["arms"].items() if not row.get("interior", True)]
    loose = [label for label, row in tuning["arms"].items() if row.get("bracketed") is False]
    print(
        f"optimum at a grid edge: {', '.join(edge) or 'none'}; not bracketed beyond the seed "
        f"noise: {', '.join(loose) or 'none'}"
    )

# %% [markdown]
# ## The claims, with their numbers
#
# Each claim has a rule fixed in `analysis.results.claims` before the reference runs; intervals
# are Student-t 95% over seeds, differences paired by seed; the paper's number is shown
# beside ours. A claim that does not hold at this scale is reported as such.

# %%
checked = claims.all_claims(runs, rec.results, rec.side_file("reference_losses.json"))
for c in checked:
    print(f"- {c.title}: {c.verdict}\n    ours: {c.evidence}\n    paper: {c.paper}")
suspects = claims.suspect_arms(rec.results)
gates = all_gates(rec.results, rec.side_file("reference_losses.json"))
failed = [g for g in gates if g.passed is False]
for g in failed:
    print(f"FAILED gate {g.name}: {g.evidence}. What it means: {g.meaning}.")
adam_loss = table.loc["adamw", "loss"] if "adamw" in table.index else float("nan")
for label in suspects:
    print(
        f"baseline suspect: {label}'s perplexity is {100 * (np.exp(table.loc[label, 'loss'] - adam_loss) - 1):+.1f}% "
        "against tuned AdamW's (the flag's line: -10%)"
    )

# %% [markdown]
# **Reading the claims.** Each verdict above comes with the numbers that decided it; read
# them against the gates, whose failures are printed with what they mean. A "baseline
# suspect" flag says that some arm beats tuned AdamW by more than 10% in perplexity: the usual
# sign that AdamW's tuning left something out (its lr on the embedding and the output layer,
# its stability across seeds), so a ranking against AdamW waits for the gates that test it.
# The two steps of the argument are checked below with the interval
# the seeds give; where there is one seed (a recompute), only the order is checked, and a
# 12-step SMOKE recompute is too short to rank anything, so it says so instead.
#
# ## What this notebook shows (checked)

# %%
loss = table["loss"]
seeds = int(table["seeds"].min())
if RECOMPUTE and SMOKE:
    print(
        "not at this length: a 12-step SMOKE run cannot rank the arms (step 1 and 2 need the "
        "quick preset or the shipped reference)"
    )
else:
    # step 1: column normalization beats plain SGD
    assert loss["col_norm"] < loss["sgd"]
    # step 2: output-layer momentum improves column normalization ...
    assert loss["scale"] < loss["col_norm"]
    diff, half, paired_seeds = stats.paired(rec.results, "scale", "col_norm")
    if seeds >= 2:  # ... by more than the seed-to-seed interval
        # every seed both arms ran is paired (the headline's arms may have more than the rest)
        assert paired_seeds == table.loc[["scale", "col_norm"], "seeds"].min() and diff + half < 0
# SCALE keeps a small fraction of AdamW's optimizer state
assert table.loc["scale", "state_mb"] < 0.3 * table.loc["adamw", "state_mb"]
# every claim states its rule and shows the paper's number beside ours
assert len(checked) == 10 and all(c.rule and c.paper for c in checked)
