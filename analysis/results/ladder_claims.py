"""The ladder's claims (arXiv 2506.16659's bottom-up argument, claims 3, 4 and 8 of
``analysis.results.claims``, whose docstring states their rules): plain SGD against the unigram
line and against column normalization, and the normalizations' order at every tuned setting,
pair by pair; with the tuned settings' results they read (``setting_results``, ``ladder_order``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.recording import ORDER, SELECTION, TUNING, RecordingError, read_json
from analysis.results.paper import ABLATION_PERPLEXITY
from analysis.results.paper import NORMALIZATIONS as LADDER
from analysis.results.root import chosen_grid
from analysis.results.stats import final_results, fmt, paired, separated, summary
from analysis.results.variance_claims import Claim, three_way

SGD_STALLS = 0.10  # claim 3: under 10% of col_norm's progress below the unigram loss


PAPER_ORDER = sorted(LADDER, key=ABLATION_PERPLEXITY["60m"].get)  # best first


def ppl_gap(a: float, b: float) -> float:
    """The perplexity gap ``exp(a - b) - 1`` of losses ``a`` against ``b`` (0.05: 5% worse)."""
    return math.exp(a - b) - 1


def _sgd_share(results: pd.DataFrame, unigram: float) -> float | None:
    s = summary(results)
    if not {"sgd", "col_norm"} <= set(s.index):
        return None
    if not math.isfinite(s.loc["sgd", "loss"]):
        return 0.0  # diverged at every tuned lr: no progress
    progress = unigram - s.loc["col_norm", "loss"]
    if progress <= 0:
        return math.nan
    return max(0.0, unigram - s.loc["sgd", "loss"]) / progress


def sgd_claims(results: pd.DataFrame, lines: dict | None, settings: dict | None = None) -> list[Claim]:
    """Claims 3 and 4: SGD against the unigram line at two lengths, and col_norm against SGD.
    ``settings``: further tuned settings' results (``setting_results``), name -> frame."""
    title = "Plain SGD does not train"
    rule = (
        f"sgd's share of col_norm's progress below the unigram loss under "
        f"{100 * SGD_STALLS:.0f}% at the main length, and no larger than at a shorter one"
    )
    paper = "ablation: plain SGD 'does not train' at 60M-350M (no perplexity given)"
    main = _sgd_share(results, lines["unigram"]) if lines else None
    if main is None or (isinstance(main, float) and math.isnan(main)):
        first = Claim(
            title,
            rule,
            None,
            "needs the reference lines and `sgd`, `col_norm` runs whose col_norm ends below the unigram loss",
            paper,
        )
    else:
        shares = {"main": main}
        steps = {"main": int(results["steps"].iloc[0])}
        for name, frame in (settings or {}).items():
            share = _sgd_share(frame, lines["unigram"])
            if (
                share is not None
                and math.isfinite(share)
                and frame["model"].iloc[0] == results["model"].iloc[0]
            ):
                shares[name], steps[name] = share, int(frame["steps"].iloc[0])
        shorter = [n for n in shares if steps[n] < steps["main"]]
        grows = any(shares["main"] > shares[n] for n in shorter)
        held = bool(main < SGD_STALLS and not grows) if shorter else None
        evidence = "; ".join(
            f"{n} ({steps[n]} steps): sgd makes {100 * v:.0f}% of col_norm's progress below the unigram loss"
            for n, v in shares.items()
        )
        if not shorter:
            evidence += "; no shorter setting of the same model to compare with"
        first = Claim(title, rule, held, evidence, paper)
    second = better(
        results,
        "col_norm",
        "sgd",
        "Column normalization trains better than plain SGD",
        "plain SGD does not train; column normalization does (60M ppl 39.89)",
    )
    return [first, second]


def better(results, a, b, title, paper) -> Claim:
    """The claim "``a`` ends below ``b``": held when the paired interval is below 0, did not hold
    when it is at or above 0, inconclusive between (and on one seed)."""
    rule = f"{a}'s final validation loss below {b}'s (paired 95% interval below 0)"
    diff, half, n = paired(results, a, b)
    if n == 0:
        return Claim(title, rule, None, f"needs finished runs of `{a}` and `{b}`", paper)
    decided = math.isfinite(half)  # one seed decides nothing
    return three_way(
        title,
        rule,
        decided and diff + half < 0,
        decided and diff - half >= 0,
        f"loss({a}) - loss({b}) = {fmt(diff, half)} nats over {n} "
        f"seed{'s' if n > 1 else ''} (perplexity {100 * ppl_gap(diff, 0):+.1f}%)",
        paper,
    )


def setting_results(root: str | Path) -> dict[str, pd.DataFrame]:
    """The reported runs of every further tuned setting (``order/<name>`` with its own
    selection), name -> ``final_results``."""
    out = {}
    for path in sorted((Path(root) / ORDER).glob(f"*/{SELECTION}")):
        try:
            out[path.parent.name] = final_results(path.parent)
        except RecordingError:
            continue
    return out


def ladder_order(root: str | Path) -> dict[str, list[str]]:
    """Per tuned setting (the main one and ``order/*``), the ladder arms best-first by the mean
    loss of their best point over the tuning seeds (the table beside claim 8), each labelled
    with the protocol version that tuned it (a further setting may keep version 2's runs)."""
    root = Path(root)
    settings = {}
    for path in [root / TUNING, *sorted((root / ORDER).glob(f"*/{TUNING}"))]:
        table = read_json(path)
        if table is None:
            continue
        best = {}
        for label, row in table["arms"].items():
            if label in LADDER and row.get("best") is not None:
                losses = [x for x in chosen_grid(table, row)[f"{row['best']:.3g}"] if x is not None]
                if losses:
                    best[label] = sum(losses) / len(losses)
        name = "main" if path.parent == root else path.parent.name
        version = table.get("protocol", 2)  # a setting tuned before version 3 keeps its label
        settings[f"{name} ({table['model']}, {table['steps']} steps, protocol v{version})"] = sorted(
            best, key=best.get
        )
    return settings


def _ladder_margins(results: pd.DataFrame) -> list[tuple[str, str, float, float, int]]:
    """Paired margins loss(a) - loss(b) between neighbours of the paper's order (a ahead)."""
    present = [arm for arm in PAPER_ORDER if arm in set(results["label"])]
    return [(a, b, *paired(results, a, b)) for a, b in zip(present, present[1:])]


def order_claim(
    root, results: pd.DataFrame | None = None, settings: dict[str, pd.DataFrame] | None = None
) -> Claim:
    """Claim 8: the ladder at every tuned setting, pair by pair."""
    title = "The ladder's order: spectral, column, sign, row (best first), pair by pair"
    rule = (
        "at every tuned setting, paired margins between neighbours of the paper's 60M order; "
        "a pair whose interval holds 0 is tied; held when no separated pair contradicts the "
        "order and at least one pair is separated"
    )
    paper = (
        "; ".join(
            f"{m.upper()}: " + " < ".join(sorted(LADDER, key=ABLATION_PERPLEXITY[m].get))
            for m in ("60m", "130m", "350m")
        )
        + " (perplexity, best first)"
    )
    frames = {} if results is None else {"main": results}
    frames |= settings if settings is not None else setting_results(root)
    parts, resolved, contradicted = [], 0, 0
    for name, frame in frames.items():
        margins = [m for m in _ladder_margins(frame) if m[4] >= 2]
        if not margins:
            continue
        words = []
        for a, b, diff, half, _ in margins:
            if separated(diff, half):
                resolved += 1
                contradicted += diff > 0
                words.append(f"{a} {'<' if diff < 0 else '>'} {b} ({fmt(diff, half)})")
            else:
                words.append(f"{a} ~ {b} tied ({fmt(diff, half)})")
        parts.append(f"{name}: " + ", ".join(words))
    if not parts:
        return Claim(
            title,
            rule,
            None,
            "needs the ladder's arms on >= 2 seeds at a tuned setting "
            "(`scale-lab reproduce --preset reference`)",
            paper,
        )
    held = None if resolved == 0 else contradicted == 0
    return Claim(
        title,
        rule,
        held,
        "; ".join(parts) + f" ({resolved} separated, {contradicted} against the paper's order)",
        paper,
        inconclusive=held is None,
    )
