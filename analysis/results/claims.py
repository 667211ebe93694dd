"""The paper's claims (arXiv 2506.16659) as rules, checked on a root of recorded runs.

The rules and thresholds below were committed before the reference runs that judge them;
a claim that does not hold is reported with its numbers. Each claim shows the paper's
corresponding number beside ours (``analysis.results.paper``). Intervals are Student-t 95%
over seeds; differences between arms are paired by seed (same data order and init).

1. Variance: the output layer has the highest per-layer gradient variance, the embedding
   second. Judged on the paper's probe (small batches against a large one, total per layer,
   role means, time-averaged over the ``col_norm`` runs); the micro-batch estimator's total,
   per-entry and relative (divided by ``||g||^2``) rankings are shown beside it.
2. Figure 4b: once the output layer has momentum, the embedding's gradient variance drops
   (``scale`` vs ``col_norm``, paired log ratio of the time-averaged embedding variance
   below 0 with its interval).
3. Plain SGD does not train: measured from the corpus's unigram loss (learning token
   frequencies is not training a language model), SGD makes under 10% of column
   normalization's progress (or diverges).
4. Column normalization beats plain SGD (paired interval below 0).
5. Output-layer momentum improves column normalization (paired interval below 0).
6. SCALE is close to AdamW, two-sided: perplexity within +-5% of tuned AdamW's.
7. Output-layer momentum recovers most (> 50%) of all-layer momentum's gain over
   ``col_norm`` (``scale`` vs ``col_norm+all``), shown with the share of state it needs.
8. The ladder's order: spectral and column normalization ahead of row and sign (the part
   of the order the paper's 60M/130M/350M ablation keeps), at every tuned setting (two run
   lengths x two model sizes); the full order per setting is shown, stable or not.
9. SCALE's optimizer state is the output layer only (measured bytes).

Besides the claims: a *baseline suspect* flag when any arm's perplexity is more than 10%
below tuned AdamW's (the usual sign of an under-tuned baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.recording import ORDER, TUNING, RecordingError, load_runs, read_json
from analysis.results.memory import state_elements
from analysis.results.paper import ABLATION_PERPLEXITY, PERPLEXITY
from analysis.results.paper import NORMALIZATIONS as LADDER
from analysis.results.stats import fmt, interval, paired, summary
from toy_models.llama import load_config as model_config
from toy_models.llama import parameter_counts

CLOSE_PPL = 0.05          # claim 6: |ppl(scale) / ppl(adamw) - 1| <= 5%
SUSPECT_PPL = 0.10        # flag: an arm > 10% below tuned AdamW's perplexity
SGD_STALLS = 0.10         # claim 3: under 10% of col_norm's progress below the unigram loss
MOST = 0.50               # claim 7: "most" of all-layer momentum's gain
LEADERS = {"spectral_norm", "col_norm"}   # claim 8: ahead of row_norm and sign


@dataclass
class Claim:
    """One claim as checked: rule, verdict (None: not checked), our numbers, the paper's."""
    title: str
    rule: str
    held: bool | None
    evidence: str
    paper: str = ""

    @property
    def verdict(self) -> str:
        return {True: "held", False: "did not hold", None: "not checked"}[self.held]


def _ppl_gap(a: float, b: float) -> float:
    return math.exp(a - b) - 1


def _paper_gap(model: str, a: str, b: str, table=PERPLEXITY) -> str:
    return f"{model.upper()} {100 * (table[model][a] / table[model][b] - 1):+.1f}%"


def _role_means(frame: pd.DataFrame, stat: str) -> pd.DataFrame:
    """Per run and role, the time-averaged role mean of a per-parameter statistic."""
    rows = frame[(frame["stat"] == stat) & frame["param"].notna() & (frame["step"] > 0)]
    if rows.empty:
        raise RecordingError(f"no {stat!r} rows: record with instrumentation on")
    per_step = rows.groupby(["run", "seed", "step", "role"], as_index=False)["value"].mean()
    return per_step.groupby(["run", "seed", "role"], as_index=False)["value"].mean()


def _ranking(frame: pd.DataFrame, stat: str) -> list[str]:
    means = _role_means(frame, stat).groupby("role")["value"].mean()
    return list(means.sort_values(ascending=False).index)


def variance_claim(frame: pd.DataFrame, label: str = "col_norm") -> Claim:
    """Claim 1 on a metrics frame (``load_runs``): the variance ranking, three ways and the probe."""
    title = "The output layer has the highest gradient variance, the embedding second"
    rule = (f"on the `{label}` runs, the paper's probe (K small batches vs one large batch, total "
            "variance per layer, role means, time-averaged) ranks output first and embedding second")
    paper = "Figure 4: output highest throughout training, embedding second (no number given)"
    part = frame[frame["label"] == label]
    try:
        judged = _ranking(part, "probe_var")
        shown = {"micro-batch total": _ranking(part, "grad_var"),
                 "per entry": _ranking(part, "grad_var_coord"),
                 "relative to ||g||^2": _ranking(part, "grad_var_rel"),
                 "probe relative": _ranking(part, "probe_var_rel")}
    except RecordingError as err:
        return Claim(title, rule, None, str(err), paper)
    evidence = f"probe total: {' > '.join(judged)}; " + "; ".join(
        f"{name}: {' > '.join(order)}" for name, order in shown.items())
    return Claim(title, rule, judged[:2] == ["output", "embedding"], evidence, paper)


def embedding_variance_claim(frame: pd.DataFrame) -> Claim:
    """Claim 2 (the paper's Figure 4b) on a metrics frame."""
    title = "Output-layer momentum lowers the embedding's gradient variance (Figure 4b)"
    rule = ("log(embedding variance with `scale` / with `col_norm`), micro-batch total, "
            "time-averaged, paired by seed: mean and 95% interval below 0")
    paper = "Figure 4b: the embedding's variance drops once the last layer has momentum (qualitative)"
    try:
        means = _role_means(frame[frame["label"].isin(["scale", "col_norm"])], "grad_var")
    except RecordingError as err:
        return Claim(title, rule, None, str(err), paper)
    emb = means[means["role"] == "embedding"].merge(
        frame[["run", "label"]].drop_duplicates(), on="run").pivot(index="seed", columns="label",
                                                                      values="value")
    if not {"scale", "col_norm"} <= set(emb.columns):
        return Claim(title, rule, None, "needs instrumented `scale` and `col_norm` runs", paper)
    logs = np.log(emb["scale"] / emb["col_norm"]).dropna().tolist()
    mean, half = interval(logs)
    held = mean < 0 and (not math.isfinite(half) or mean + half < 0)
    return Claim(title, rule, held, f"log ratio {fmt(mean, half)} over {len(logs)} seeds "
                 f"(variance x {math.exp(mean):.2f})", paper)


def sgd_claims(results: pd.DataFrame, lines: dict | None) -> list[Claim]:
    """Claims 3 and 4: SGD against the unigram line, and column normalization against SGD."""
    s = summary(results)
    title = "Plain SGD does not train"
    rule = (f"from the corpus's unigram loss, sgd's drop is under {100 * SGD_STALLS:.0f}% of "
            "col_norm's (or sgd diverges)")
    paper = "ablation: plain SGD 'does not train' at 60M-350M (no perplexity given)"
    if lines is None or not {"sgd", "col_norm"} <= set(s.index):
        first = Claim(title, rule, None, "needs the reference lines and `sgd`, `col_norm` runs", paper)
    elif not math.isfinite(s.loc["sgd", "loss"]):
        first = Claim(title, rule, True, "sgd diverged at every tuned learning rate", paper)
    elif s.loc["col_norm", "loss"] >= lines["unigram"]:
        first = Claim(title, rule, None, f"col_norm ({s.loc['col_norm', 'loss']:.3f}) is not below "
                      f"the unigram loss ({lines['unigram']:.3f}): no progress to compare with", paper)
    else:
        uni = lines["unigram"]
        share = (uni - s.loc["sgd", "loss"]) / (uni - s.loc["col_norm", "loss"])
        first = Claim(title, rule, bool(share < SGD_STALLS),
                      f"unigram {uni:.3f}; sgd {s.loc['sgd', 'loss']:.3f}, col_norm "
                      f"{s.loc['col_norm', 'loss']:.3f}: sgd makes {100 * share:.0f}% of col_norm's "
                      "progress below the unigram loss", paper)
    second = _better(results, "col_norm", "sgd", "Column normalization trains better than plain SGD",
                     "plain SGD does not train; column normalization does (60M ppl 39.89)")
    return [first, second]


def _better(results, a, b, title, paper) -> Claim:
    rule = f"{a}'s final validation loss below {b}'s (paired 95% interval below 0)"
    diff, half, n = paired(results, a, b)
    if n == 0:
        return Claim(title, rule, None, f"needs finished runs of `{a}` and `{b}`", paper)
    held = diff < 0 and (not math.isfinite(half) or diff + half < 0)
    return Claim(title, rule, held, f"loss({a}) - loss({b}) = {fmt(diff, half)} nats over {n} "
                 f"seed{'s' if n > 1 else ''} (perplexity {100 * _ppl_gap(diff, 0):+.1f}%)", paper)


def adamw_claim(results: pd.DataFrame) -> Claim:
    """Claim 6: SCALE within +-5% of tuned AdamW's perplexity (two-sided)."""
    title = "SCALE's final loss is close to AdamW's"
    rule = f"two-sided: scale's perplexity within +-{100 * CLOSE_PPL:.0f}% of tuned adamw's"
    paper = "scale vs adam perplexity: " + ", ".join(
        _paper_gap(m, "scale", "adamw") for m in ("60m", "130m", "350m", "1b"))
    diff, half, n = paired(results, "scale", "adamw")
    if n == 0:
        return Claim(title, rule, None, "needs finished runs of `scale` and `adamw`", paper)
    gap = _ppl_gap(diff, 0)
    low, high = _ppl_gap(diff - half, 0), _ppl_gap(diff + half, 0)
    span = f" (95% interval {100 * low:+.1f}% .. {100 * high:+.1f}%)" if math.isfinite(half) else ""
    return Claim(title, rule, bool(abs(gap) <= CLOSE_PPL),
                 f"perplexity gap {100 * gap:+.1f}%{span}; loss difference {fmt(diff, half)} "
                 f"nats over {n} seeds", paper)


def momentum_share_claim(results: pd.DataFrame) -> Claim:
    """Claim 7: output-layer momentum's share of all-layer momentum's gain, and of its state."""
    title = "Output-layer momentum recovers most of all-layer momentum's gain"
    rule = (f"(loss(col_norm) - loss(scale)) / (loss(col_norm) - loss(col_norm+all)) > {MOST:.0%}, "
            "paired by seed; shown with scale's state as a share of col_norm+all's")
    m60 = ABLATION_PERPLEXITY["60m"]
    closes = (m60["col_norm"] - m60["scale"]) / (m60["col_norm"] - PERPLEXITY["60m"]["adamw"])
    paper = (f"60M: last-layer momentum takes col_norm from {m60['col_norm']} to {m60['scale']} "
             f"perplexity, {100 * closes:.0f}% of the way to Adam's {PERPLEXITY['60m']['adamw']} "
             "(all-layer momentum not reported)")
    gain_out, half_out, n = paired(results, "col_norm", "scale")
    gain_all, half_all, n_all = paired(results, "col_norm", "col_norm+all")
    if not n or not n_all:
        return Claim(title, rule, None, "needs `col_norm`, `scale` and `col_norm+all` runs", paper)
    share = gain_out / gain_all if gain_all > 0 else math.nan
    s = summary(results)
    state = s.loc["scale", "state_mb"] / s.loc["col_norm+all", "state_mb"]
    held = bool(gain_all > 0 and share > MOST)
    detail = (f"gain of output momentum {fmt(gain_out, half_out)} nats, of all-layer momentum "
              f"{fmt(gain_all, half_all)}: share {100 * share:.0f}%" if gain_all > 0 else
              f"all-layer momentum does not improve col_norm here (col_norm+all is {-gain_all:.3f} "
              f"nats worse); output momentum's gain {gain_out:+.3f} nats")
    return Claim(title, rule, held, f"{detail}; scale keeps {100 * state:.0f}% of col_norm+all's "
                 "state", paper)


def ladder_order(root: str | Path) -> dict[str, list[str]]:
    """Per tuned setting (the main one and ``order/*``), the ladder arms best-first by the mean
    loss of their best lr over the tuning seeds."""
    root = Path(root)
    settings = {}
    for path in [root / TUNING, *sorted((root / ORDER).glob(f"*/{TUNING}"))]:
        table = read_json(path)
        if table is None:
            continue
        best = {}
        for label, row in table["arms"].items():
            if label in LADDER and row.get("best") is not None:
                losses = row["grid"][f"{row['best']:.3g}"]
                best[label] = sum(losses) / len(losses)
        name = "main" if path.parent == root else path.parent.name
        settings[f"{name} ({table['model']}, {table['steps']} steps)"] = sorted(best, key=best.get)
    return settings


def order_claim(root) -> Claim:
    """Claim 8: the ladder's leaders at every tuned setting (``ladder_order``)."""
    title = "The ladder's order: spectral and column normalization ahead of row and sign"
    rule = ("at every tuned setting (two run lengths x two model sizes), spectral_norm and "
            "col_norm are the two best of the four normalizations")
    paper = "; ".join(f"{m.upper()}: " + " < ".join(sorted(LADDER, key=ABLATION_PERPLEXITY[m].get))
                      for m in ("60m", "130m", "350m"))
    settings = {k: v for k, v in ladder_order(root).items() if len(v) == len(LADDER)}
    if len(settings) < 2:
        return Claim(title, rule, None, "needs the tuned ladder at two or more settings "
                     "(`scale-lab reproduce --preset reference`)", paper)
    held = all(set(order[:2]) == LEADERS for order in settings.values())
    stable = len({tuple(order) for order in settings.values()}) == 1
    evidence = "; ".join(f"{k}: {' < '.join(v)}" for k, v in settings.items())
    return Claim(title, rule, held, f"{evidence} (full order {'stable' if stable else 'not stable'} "
                 "across settings)", paper + " (perplexity, best first)")


def memory_claim(results: pd.DataFrame) -> Claim:
    """Claim 9: SCALE's measured state against the output layer's size."""
    title = "SCALE's optimizer state is the output layer only"
    rule = "measured state bytes == 4 x (output-layer elements + 2 x vector elements)"
    part = results[results["label"] == "scale"]
    if part.empty:
        return Claim(title, rule, None, "needs a finished `scale` run")
    model = part["model"].iloc[0]
    config = model_config(model)
    counts = parameter_counts(config)
    expected = 4 * (counts["output"] + 2 * counts["vector"])
    measured = int(part["state_bytes"].iloc[0])
    adam = 4 * state_elements("adamw", config, 1)
    return Claim(title, rule, measured == expected,
                 f"{model}: measured {measured:,} B, expected {expected:,} B; AdamW keeps {adam:,} B "
                 f"(SCALE = {100 * measured / adam:.1f}% of AdamW's state)",
                 "SCALE = 35-45% of Adam's total memory (parameters + state), 1B: 2.81 vs 8.04 GB")


def suspect_arms(results: pd.DataFrame) -> list[str]:
    """Arms whose perplexity is more than ``SUSPECT_PPL`` below tuned AdamW's."""
    s = summary(results)
    if "adamw" not in s.index:
        return []
    return [label for label, row in s.iterrows() if label != "adamw" and
            _ppl_gap(row["loss"], s.loc["adamw", "loss"]) < -SUSPECT_PPL]


def all_claims(root, results: pd.DataFrame, lines: dict | None) -> list[Claim]:
    """Every claim, in the order of the module docstring."""
    try:
        frame = load_runs(root)
        variance = [variance_claim(frame), embedding_variance_claim(frame)]
    except RecordingError as err:
        variance = [Claim("Gradient variance claims", "needs instrumented runs", None, str(err))]
    return [*variance, *sgd_claims(results, lines),
            _better(results, "scale", "col_norm", "Output-layer momentum improves column-normalized SGD",
                    "60M/130M/350M perplexity col_norm -> scale: " + ", ".join(
                        _paper_gap(m, "scale", "col_norm", ABLATION_PERPLEXITY)
                        for m in ("60m", "130m", "350m"))),
            adamw_claim(results), momentum_share_claim(results), order_claim(root),
            memory_claim(results)]
