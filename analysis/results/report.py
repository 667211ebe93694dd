"""Results over seeds and the paper's claims, checked on recordings; written as ``report.md``.

Intervals are Student-t 95% intervals over seeds: ``mean +- t(0.975, n-1) s / sqrt(n)``; a
difference between two arms is paired by seed (same data order and init). With one seed
there is no interval and the report says so. Each claim states its rule before its verdict,
and a claim that does not hold is reported with its numbers (never tuned until it passes).

The claims (the paper, arXiv 2506.16659: its Figure 4 and Tables 2-4):

1. the output layer has the highest gradient variance over training, the embedding second
   (``grad_var``, role means, time-averaged over the ``col_norm`` runs; the relative
   variance ``grad_var_rel`` is reported alongside, since the paper does not say which);
2. plain SGD does not train (its loss drop is under 10% of column normalization's), and
   column normalization trains better than plain SGD (two checks: the first can fail at
   tuned toy-scale learning rates while the second holds);
3. output-layer momentum improves column-normalized SGD (``scale`` vs ``col_norm``);
4. SCALE's final loss is close to AdamW's (perplexity within 5%, the paper's own gaps being
   +2.5% at 60M and -2.4% at 130M);
5. SCALE's optimizer state is the output layer only (measured bytes == 4 x (output layer +
   two Adam moments per vector), fp32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.recording import RecordingError, find_runs, load_config, load_result, load_runs
from analysis.results.memory import state_elements
from analysis.results.style import ordered
from toy_models.llama import load_config as model_config
from toy_models.llama import parameter_counts

ROLE_ORDER = ("output", "embedding", "hidden", "vector")
CLOSE_PPL = 0.05
SGD_STALLS = 0.10   # "does not train": less than 10% of column normalization's progress


@dataclass
class Claim:
    """One of the paper's claims as checked here: its rule, verdict (None: not checked) and numbers."""
    title: str
    rule: str
    held: bool | None   # None: could not be checked (missing runs or statistics)
    evidence: str

    @property
    def verdict(self) -> str:
        return {True: "held", False: "did not hold", None: "not checked"}[self.held]


def interval(values) -> tuple[float, float]:
    """Mean and Student-t 95% half-width (nan with fewer than two finite values)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def final_results(root: str | Path) -> pd.DataFrame:
    """One row per run below ``root``: label, seed, final validation loss, state bytes, status."""
    rows = []
    for run in find_runs(root):
        result = load_result(run)
        if result is None:
            continue  # unfinished: not a result yet
        config = load_config(run).get("config", {})
        loss = result.get("final_eval_loss", math.nan)
        rows.append({"run": str(run), "label": config.get("label") or config.get("optimizer"),
                     "optimizer": config.get("optimizer"), "momentum": config.get("momentum"),
                     "model": config.get("model"), "seed": config.get("seed"), "lr": config.get("lr"),
                     "first_eval_loss": result.get("first_eval_loss", math.nan),
                     "final_eval_loss": math.nan if loss is None else float(loss),
                     "diverged_at": result.get("diverged_at"),
                     "state_bytes": result.get("optimizer_state_bytes", math.nan)})
    if not rows:
        raise RecordingError(f"no finished runs under {root}; run `scale-lab reproduce` first")
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per arm: seeds, mean loss and interval, perplexity (exp of the mean loss), state MB."""

    rows = []
    for label in ordered(results["label"]):
        part = results[results["label"] == label]
        mean, half = interval(part["final_eval_loss"])
        rows.append({"label": label, "seeds": len(part), "diverged": int(part["diverged_at"].notna().sum()),
                     "lr": part["lr"].iloc[0], "loss": mean, "loss_ci": half,
                     "perplexity": math.exp(mean) if math.isfinite(mean) else math.nan,
                     "state_mb": part["state_bytes"].mean() / 1e6})
    return pd.DataFrame(rows).set_index("label")


def paired_difference(results: pd.DataFrame, a: str, b: str) -> tuple[float, float, int]:
    """Mean and 95% half-width of loss(a) - loss(b), paired by seed."""
    pa = results[results["label"] == a].set_index("seed")["final_eval_loss"]
    pb = results[results["label"] == b].set_index("seed")["final_eval_loss"]
    both = (pa - pb).dropna()
    mean, half = interval(both.tolist())
    return mean, half, len(both)


def _fmt(mean: float, half: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" +- {half:.{digits}f}" if math.isfinite(half) else "")


def _better(results, a, b, name_a, name_b) -> tuple[bool | None, str]:
    """Is arm ``a`` better (lower loss) than ``b``? Paired interval when there are seeds."""
    diff, half, n = paired_difference(results, a, b)
    if n == 0:
        return None, f"needs finished runs of both `{a}` and `{b}`"
    held = diff < 0 and (not math.isfinite(half) or diff + half < 0)
    scope = f"{n} seed{'s' if n > 1 else ''}" + ("" if n > 1 else ", no interval")
    return held, f"loss({name_a}) - loss({name_b}) = {_fmt(diff, half)} nats ({scope})"


def role_variance(frame: pd.DataFrame, stat: str = "grad_var_rel") -> pd.DataFrame:
    """Role-mean of a per-parameter statistic at each recorded step, per run: tidy rows."""
    rows = frame[(frame["stat"] == stat) & frame["param"].notna()]
    if rows.empty:
        raise RecordingError(f"no {stat!r} rows: record with instrumentation on "
                             "(`scale-lab train --instrument` or `scale-lab reproduce`)")
    return (rows.groupby(["run", "label", "seed", "step", "role"], as_index=False)["value"].mean())


def _role_ranking(frame: pd.DataFrame, stat: str) -> tuple[pd.Series, float, int]:
    """Time-averaged role means (descending), share of steps where output is highest, steps."""
    by_role = role_variance(frame, stat)
    by_role = by_role[by_role["step"] > 0]
    means = by_role.groupby("role")["value"].mean().sort_values(ascending=False)
    wide = by_role.groupby(["step", "role"])["value"].mean().unstack()
    top = float((wide.idxmax(axis=1) == "output").mean()) if "output" in wide else 0.0
    return means, top, len(wide)


def variance_claim(root, label: str = "col_norm") -> Claim:
    """Claim 1: the output layer has the highest gradient variance, the embedding second."""
    rule = ("per-layer gradient variance E||g_b - g||^2 (the paper's large-vs-small batch "
            "discrepancy per layer; micro-batch estimator, role means, time-averaged over the "
            f"`{label}` runs): held if output is first and embedding second. The relative "
            "variance (divided by ||g||^2) is reported alongside")
    title = "The output layer has the highest gradient variance, the embedding second"
    try:
        frame = load_runs(root)
        frame = frame[frame["label"] == label]
        if frame.empty:
            return Claim(title, rule, None, f"needs instrumented `{label}` runs")
        means, top, steps = _role_ranking(frame, "grad_var")
        rel, rel_top, _ = _role_ranking(frame, "grad_var_rel")
    except RecordingError as err:
        return Claim(title, rule, None, str(err))
    held = list(means.index[:2]) == ["output", "embedding"]
    evidence = ("variance: " + ", ".join(f"{r} {v:.3g}" for r, v in means.items())
                + f" (output highest at {100 * top:.0f}% of {steps} recorded steps); relative "
                "variance: " + ", ".join(f"{r} {v:.3g}" for r, v in rel.items())
                + f" (output highest at {100 * rel_top:.0f}% of steps)")
    return Claim(title, rule, held, evidence)


def claims(root, results: pd.DataFrame) -> list[Claim]:
    """Every claim, checked on the runs under ``root`` and their ``results``."""
    out = [variance_claim(root)]
    s = summary(results)
    if "sgd" in s.index and "col_norm" in s.index:
        first = results["first_eval_loss"].dropna().mean()
        drop_sgd, drop_col = first - s.loc["sgd", "loss"], first - s.loc["col_norm", "loss"]
        if math.isfinite(drop_sgd):
            share = drop_sgd / drop_col
            held = bool(share < SGD_STALLS)
            ev = (f"from {first:.3f} at init, sgd drops {drop_sgd:.3f} nats and col_norm "
                  f"{drop_col:.3f}: sgd makes {100 * share:.0f}% of col_norm's progress")
        else:
            held, ev = True, "sgd diverged at its tuned learning rate"
    else:
        held, ev = None, "needs finished runs of both `sgd` and `col_norm`"
    out.append(Claim("Plain SGD does not train", f"sgd's drop in validation loss below "
                     f"{100 * SGD_STALLS:.0f}% of col_norm's (or sgd diverges)", held, ev))
    held, ev = _better(results, "col_norm", "sgd", "col_norm", "sgd")
    out.append(Claim("Column normalization trains better than plain SGD",
                     "col_norm's final validation loss below sgd's (paired 95% interval below 0 "
                     "when there are >= 2 seeds)", held, ev))
    held, ev = _better(results, "scale", "col_norm", "scale", "col_norm")
    out.append(Claim("Output-layer momentum improves column-normalized SGD",
                     "scale's final validation loss below col_norm's (paired interval as above)",
                     held, ev))
    diff, half, n = paired_difference(results, "scale", "adamw")
    if n and "adamw" in s.index:
        gap = s.loc["scale", "perplexity"] / s.loc["adamw", "perplexity"] - 1
        held = bool(gap <= CLOSE_PPL)
        ev = (f"perplexity scale {s.loc['scale', 'perplexity']:.2f} vs adamw "
              f"{s.loc['adamw', 'perplexity']:.2f} ({100 * gap:+.1f}%); loss difference "
              f"{_fmt(diff, half)} nats over {n} seed{'s' if n > 1 else ''}")
    else:
        held, ev = None, "needs finished runs of both `scale` and `adamw`"
    out.append(Claim("SCALE's final loss is close to AdamW's",
                     f"scale's perplexity at most {100 * CLOSE_PPL:.0f}% above adamw's", held, ev))
    out.append(memory_claim(results))
    return out


def memory_claim(results: pd.DataFrame) -> Claim:
    """Claim: SCALE's measured state is the output layer plus two Adam moments per vector."""
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
                 f"{model}: measured {measured:,} B, expected {expected:,} B; AdamW would keep "
                 f"{adam:,} B (SCALE = {100 * measured / adam:.1f}% of AdamW's state)")


def markdown(root, results: pd.DataFrame, figures_dir: Path | None = None) -> str:
    """The report: results table with intervals, then each claim with rule and numbers."""
    s = summary(results)
    first = results.iloc[0]
    adam = s.loc["adamw", "loss"] if "adamw" in s.index else math.nan
    lines = [f"# scale-lab reproduction: {Path(root).name}", "",
             f"Model `{first['model']}`; runs under `{root}`. Final validation loss is the "
             "token-weighted mean cross-entropy on the fixed validation budget; intervals are "
             "Student-t 95% over seeds (none with one seed); learning rates were tuned on seed 0 "
             "(see `lr_sweep.md` where present).", "",
             "| arm | lr | seeds | final val loss | perplexity | vs AdamW (nats) | optimizer state (MB) |",
             "|---|---|---|---|---|---|---|"]
    for label, row in s.iterrows():
        status = f" ({row['diverged']} diverged)" if row["diverged"] else ""
        delta = row["loss"] - adam
        lines.append(f"| {label} | {row['lr']:g} | {int(row['seeds'])}{status} | {_fmt(row['loss'], row['loss_ci'])} "
                     f"| {row['perplexity']:.2f} | {delta:+.3f} | {row['state_mb']:.3f} |")
    lines += ["", "## The paper's claims at this scale", ""]
    for i, claim in enumerate(claims(root, results), 1):
        lines += [f"{i}. **{claim.title}**: {claim.verdict}.", f"   Rule: {claim.rule}.",
                  f"   Numbers: {claim.evidence}.", ""]
    if figures_dir is not None:
        lines += ["## Figures", "", f"PNG and PDF in `{figures_dir}` (`scale-lab figures --runs "
                  f"{root} --out {figures_dir}` regenerates them)."]
    return "\n".join(lines) + "\n"


def write_report(root, path, figures_dir: Path | None = None) -> Path:
    """Write ``report.md`` for the runs under ``root`` to ``path``; returns the path."""
    results = final_results(root)
    path = Path(path)
    path.write_text(markdown(root, results, figures_dir))
    return path
