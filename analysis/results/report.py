"""The report of a root of runs, ``report.md``: the setup beside the paper's, results with
intervals, each arm's tuning budget, the corpus's reference lines, and every claim of
``analysis.results.claims`` with its rule, our numbers and the paper's.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import analysis.results.held_out_report as held_out_report
from analysis.arguments import Parser
from analysis.recording import REFERENCE_LINES, TUNING, read_json, run_settings, write_atomic
from analysis.results.captions import CAPTIONS
from analysis.results.claims import SUSPECT_PPL, all_claims, suspect_arms
from analysis.results.gates import MIN_TOKENS_PER_PARAMETER, all_gates, tokens_per_parameter
from analysis.results.ladder_claims import ladder_order
from analysis.results.paper import paper_tokens_per_parameter
from analysis.results.run_set import REFERENCE
from analysis.results.stats import final_results, fmt, summary, unused_runs
from toy_models.llama import load_config as model_config
from toy_models.llama import parameter_counts


def setup_lines(root: Path, results) -> list[str]:
    """Model shape, run length and the reference lines, beside the paper's (tokens per
    parameter open the report: ``regime_lines``)."""
    first = results.iloc[0]
    counts = parameter_counts(model_config(first["model"]))
    hidden = counts["hidden"] / counts["total"]
    config = run_settings(first["run"])
    lines = [
        f"Model `{first['model']}`: {counts['total'] / 1e6:.2f}M parameters, hidden matrices "
        f"{100 * hidden:.0f}% of them (the paper's 60M: 44%, 1B: 90%). Each run: {first['steps']} "
        f"steps x {config.get('batch_size')} x {config.get('seq_len')} tokens = "
        f"{first['tokens'] / 1e6:.2f}M tokens. Learning rates: one peak lr for the matrices "
        "per arm (tuned, below), the same "
        f"vectors' Adam lr ({config.get('adam_lr')}) for every arm, and "
        + (
            "one embedding/output multiplier per arm (tuned, below)."
            if held_out_report.is_version_3(root)
            else f"the same role multipliers (embedding x{config.get('embedding_lr_mult')}, output "
            f"x{config.get('output_lr_mult')}) for every arm."
        )
    ]
    ref = read_json(root / REFERENCE_LINES)
    if ref:
        lines += [
            "",
            f"Reference lines on the same validation positions: unigram cross-entropy "
            f"{ref['unigram']:.3f} nats, bigram {ref['bigram']:.3f} nats (fitted on the training "
            "split; `toy_models.ngram`). A final loss above the bigram line means the runs are "
            "still learning token statistics, where the embedding and output layers' "
            "treatment weighs most.",
        ]
    return lines


def results_table(root: Path, results) -> list[str]:
    """Per arm: lr, seeds, loss with interval, perplexity, gap to AdamW, state, tuning budget."""
    s = summary(results)
    tuning = (read_json(root / TUNING) or {}).get("arms", {})
    adam = s.loc["adamw", "loss"] if "adamw" in s.index else math.nan
    lines = [
        "| arm | lr | seeds | final val loss | perplexity | vs AdamW ppl | state (MB) | tuning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in s.iterrows():
        status = f" ({row['diverged']} diverged)" if row["diverged"] else ""
        gap = math.exp(row["loss"] - adam) - 1 if math.isfinite(adam) else math.nan
        tune = tuning.get(label)
        budget = (
            f"{tune['runs']} runs, {tune['tokens'] / 1e6:.1f}M tokens"
            + ("" if tune["interior"] else ", optimum at grid edge")
            + (f", beta2 {tune['beta2']:g}" if "beta2" in tune else "")
            + (
                ""
                if "bracketed" not in tune
                else ", bracketed beyond seed noise"
                if tune["bracketed"]
                else ", NOT bracketed beyond seed noise"
            )
            if tune
            else "not tuned here"
        )
        lines.append(
            f"| {label} | {row['lr']:g} | {int(row['seeds'])}{status} | "
            f"{fmt(row['loss'], row['loss_ci'])} | {row['perplexity']:.1f} | "
            f"{100 * gap:+.1f}% | {row['state_mb']:.3f} | {budget} |"
        )
    return lines


def runs_used(root: Path, results) -> list[str]:
    """How many runs the report used, and every run directory it found and left out, why."""
    unused = unused_runs(root)
    lines = [
        "## Runs",
        "",
        f"{len(results)} runs used; {len(unused)} found and not used" + (":" if unused else "."),
        "",
    ]
    by_reason: dict[str, list[str]] = {}
    for path, reason in unused:
        by_reason.setdefault(reason, []).append(path.relative_to(root).as_posix() or ".")
    lines += [f"- {reason}: {', '.join(paths)}" for reason, paths in by_reason.items()]
    return lines + ([""] if unused else [])


def regime_lines(root: Path, results) -> list[str]:
    """The report's first lines: the regime (tokens per parameter, where the losses end against
    the n-gram lines) and the gates fixed before the runs (``analysis.results.gates``)."""
    lines_ref = read_json(root / REFERENCE_LINES)
    tpp = tokens_per_parameter(results)
    paper = ", ".join(f"{m.upper()} {v:.0f}" for m, v in paper_tokens_per_parameter().items())
    s = summary(results)
    first = (
        f"**Regime: {tpp:.2f} tokens per parameter** (the paper: {paper})"
        + (
            ""
            if tpp >= MIN_TOKENS_PER_PARAMETER
            else " - EARLY TRAINING: a speed test, not the paper's regime; rankings may flip before "
            "the decay ends"
        )
        + "."
    )
    out = [first, ""]
    if lines_ref:
        below = [label for label, row in s.iterrows() if row["loss"] < lines_ref["bigram"]]
        out += [
            f"Final losses from {s['loss'].min():.3f} to {s['loss'].max():.3f} nats against the "
            f"unigram line {lines_ref['unigram']:.3f} and the bigram line {lines_ref['bigram']:.3f}; "
            f"below the bigram line: {', '.join(below) if below else 'none'}.",
            "",
        ]
    gates = all_gates(results, lines_ref)
    failed = [g for g in gates if g.passed is False]
    out += [
        "Gates (fixed before the runs, `analysis/results/gates.py`): "
        + (
            "all passed."
            if not failed and all(g.passed for g in gates)
            else f"{len(failed)} FAILED."
            if failed
            else "some not checked."
        ),
        "",
    ]
    out += [
        f"- {g.name}: **{g.verdict}**. {g.rule}; {g.evidence}."
        + (f" What it means: {g.meaning}." if g.passed is False else "")
        for g in gates
    ]
    return out + [""]


def markdown(root, results, figures_dir: Path | None = None, preview: str | None = None) -> str:
    """The report (module docstring); ``preview``, the first line of a preview's report."""
    root = Path(root)
    v3 = held_out_report.is_version_3(root)
    lines = [
        f"# scale-lab reproduction: {root.name}",
        "",
        *([preview, ""] if preview else []),
        *regime_lines(root, results),
        *(held_out_report.seed_lines(root, results) if v3 else []),
        *setup_lines(root, results),
        "",
        "Final validation loss: token-weighted mean cross-entropy on the fixed validation "
        "budget, Student-t 95% intervals over seeds (none with one seed).",
        "",
        *results_table(root, results),
        "",
    ]
    if v3:
        lines += [
            "Each arm's tuned point (tuning seeds' means; the multiplier scales the "
            "embedding's and the output layer's lr):",
            "",
            *held_out_report.tuned_points_table(root),
            "",
            *held_out_report.row_lines(root, results),
            *held_out_report.retrained_lines(root),
        ]
    suspects = suspect_arms(results)
    if suspects:
        lines += [
            f"**Baseline suspect**: {', '.join(suspects)} beat tuned AdamW's perplexity by more "
            f"than {100 * SUSPECT_PPL:.0f}%; check AdamW's tuning before reading a ranking.",
            "",
        ]
    lines += [
        "## The paper's claims at this scale",
        "",
        "Rules fixed in `analysis/results/claims.py` before the runs that judge them.",
        "",
    ]
    for i, claim in enumerate(all_claims(root, results, read_json(root / REFERENCE_LINES)), 1):
        lines += [
            f"{i}. **{claim.title}**: {claim.verdict}.",
            f"   Rule: {claim.rule}.",
            f"   Ours: {claim.evidence}.",
        ]
        lines += [f"   Paper: {claim.paper}.", ""] if claim.paper else [""]
    lines += runs_used(root, results)
    order = ladder_order(root)
    if order:
        lines += [
            "## The ladder's order per tuned setting (best first)",
            "",
            "| setting | order |",
            "|---|---|",
        ]
        lines += [f"| {name} | {' < '.join(arms)} |" for name, arms in order.items()] + [""]
    if figures_dir is not None:
        lines += [
            "## Figures",
            "",
            f"PNG and PDF in `{figures_dir}` (`scale-lab figures --runs "
            f"{root} --out {figures_dir}` regenerates them).",
            "",
        ]
        for name, caption in CAPTIONS.items():
            link = os.path.relpath(Path(figures_dir) / f"{name}.png", root)
            lines += [f"- [{name}]({link}): {caption}"]
    return "\n".join(lines) + "\n"


def write_report(root, path, figures_dir: Path | None = None, preview: str | None = None) -> Path:
    """Write ``report.md`` for the runs under ``root`` to ``path``; returns the path."""
    path = Path(path)
    write_atomic(path, markdown(root, final_results(root), figures_dir, preview))
    return path


def preview_line(preset) -> str | None:
    """A preview preset's first report line: what it is a preview of, and what it cannot say."""
    if preset.preview_of is None:
        return None
    return (
        f"**PREVIEW** of the shipped reference recordings (`data/recordings/reference`, made by "
        f"`scale-lab reproduce --preset {preset.preview_of}`): {preset.description}. One seed: "
        "no intervals, and a claim that needs seeds or arms not run here says so."
    )


README_START, README_END = "<!-- reference report: start -->", "<!-- reference report: end -->"


def readme_excerpt(report: str) -> str:
    """What the README quotes of a report, verbatim so it cannot drift: the regime and the gates'
    verdict (its opening up to the model's description, without each gate's bullet) and each
    claim's verdict line."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("**Regime"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Model `"))
    opening = [line for line in lines[start:end] if not line.startswith("- ")]
    verdicts = [line for line in lines if re.match(r"\d+\. \*\*", line)]  # claim 10 too
    return (
        "\n".join(
            [
                *opening,
                "Claims (the report has each gate and rule, our numbers and the paper's):",
                "",
                *verdicts,
            ]
        )
        .strip()
        .replace("\n\n\n", "\n\n")
        + "\n"
    )


def sync_readme(readme: Path, report: Path) -> bool:
    """Put ``readme_excerpt(report)`` between the README's markers; True when it changed."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block to fill")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{readme_excerpt(report.read_text())}{README_END}{tail}"
    if new != text:
        write_atomic(readme, new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.results.report --sync-readme``: quote the shipped reference's report
    in the README (``readme_excerpt``)."""
    p = Parser(prog="python -m analysis.results.report", description=main.__doc__.split(":")[0])
    p.add_argument("--sync-readme", nargs="?", const="README.md", default="README.md", metavar="README")
    p.add_argument("--report", default=str(REFERENCE / "report.md"))
    args = p.parse_args(argv)
    changed = sync_readme(Path(args.sync_readme), Path(args.report))
    print(f"{args.sync_readme}: {'updated from' if changed else 'already quotes'} {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
