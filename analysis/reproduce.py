"""Recreate the paper's bottom-up argument: train the ladder, then write figures and a report.

``scale-lab reproduce --preset quick`` (what ``make reproduce`` runs) trains every arm on the
bundled corpus with instrumentation on, then renders every registered figure and writes
``report.md`` (results with 95% intervals over seeds, the corpus's unigram and bigram lines,
and the paper's claims checked by rules fixed in ``analysis.results.claims``).

``--preset reference`` is the comparison protocol in full (``analysis.protocol.presets``):
each arm's lr tuned at the reported length on two seeds, the best lr reported on three, and
the ladder's order re-tuned at a second length and model size; it made
``data/recordings/reference``. Resumable: finished runs are reused, an interrupted one resumes
from its last checkpoint, a diverged one is recorded as diverged and not retried.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from analysis.arguments import Parser
from analysis.optim.hyper import RecipeError
from analysis.protocol.arms import ARM_BY_LABEL, select_arms
from analysis.protocol.presets import PRESETS, get_preset
from analysis.protocol.runner import Runner, cache_sweep, jobs_default
from analysis.protocol.tuning import MAIN, run_preset, setting_names
from analysis.recording import REFERENCE_LINES, write_atomic
from analysis.results.figures import render_all
from analysis.results.report import preview_line, write_report
from analysis.results.run_set import REFERENCE
from analysis.training.config import ConfigError
from analysis.training.dryrun import plan
from toy_models.corpus import CorpusError
from toy_models.files import NotWritable
from toy_models.llama import model_tokenizer
from toy_models.ngram import for_run
from toy_models.tokenizer import load_tokenizer


def write_reference_lines(preset, out: Path) -> dict:
    """The corpus's unigram and bigram cross-entropy on the positions the preset's validation
    loss scores (``toy_models.ngram``), written to ``out/reference_losses.json``."""
    lines = for_run(
        load_tokenizer(model_tokenizer(preset.model)), preset.seq_len, preset.eval_tokens, preset.data
    )
    write_atomic(out / REFERENCE_LINES, json.dumps(lines, indent=1))
    return lines


def notebook_runs(
    recompute: bool = False, smoke: bool = False, arms=None, out: str | Path | None = None
) -> Path:
    """The runs a notebook reads: the shipped reference recordings (curated), or with
    ``recompute`` fresh ones at the ``smoke`` or ``quick`` preset's setting, of ``arms`` (every
    arm when None; resumable)."""
    if not recompute:
        if not REFERENCE.exists():
            raise FileNotFoundError(
                f"reference recordings not found at {REFERENCE}; they ship with "
                "a clone of the repository (or pass recompute=True)"
            )
        return REFERENCE
    preset = PRESETS["smoke" if smoke else "quick"]
    out = Path(out or f"runs/reproduce/{preset.name}")
    # every arm unless the notebook names its own (quick alone runs two)
    run_preset(preset, out, select_arms(arms), Runner(jobs_default(), progress=False))
    write_reference_lines(preset, out)
    return out


def parser():
    """The argument parser of ``scale-lab reproduce``."""
    p = Parser(prog="scale-lab reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default quick)")
    p.add_argument("--out", default=None, help="runs root (default runs/reproduce/<preset>)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    p.add_argument(
        "--arms", nargs="+", default=None, help=f"subset of: {' '.join(ARM_BY_LABEL)} (default: the preset's)"
    )
    p.add_argument(
        "--settings",
        nargs="+",
        default=None,
        help=f"run only these of the preset's settings ({MAIN} and its further settings' "
        "names, `--list` shows them), into the same --out; default all",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"runs side by side, one thread each (default {jobs_default()}: one per core, at most 2)",
    )
    p.add_argument("--figures", default=None, help="figure directory (default <out>/figures)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rewrite the report and figures from the runs under --out",
    )
    p.add_argument(
        "--cache-sweep",
        default=None,
        metavar="DIR",
        help="train nothing: copy the config, result and segments of every finished run "
        "under --out to DIR (what tuning reads), to continue the preset elsewhere",
    )
    p.add_argument("--list", action="store_true", help="list presets and arms")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="size every arm of the preset on GPUs (memory per GPU, FLOPs); train nothing",
    )
    p.add_argument("--gpus", type=int, default=1, help="GPUs the dry run plans for (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``scale-lab reproduce``: train the preset's arms, then the report and the figures; 0 on
    success, 2 with one error line."""
    args = parser().parse_args(argv)
    if args.list:
        for preset in PRESETS.values():
            print(f"{preset.name:<11} {preset.description}")
            if preset.order_settings:
                print(f"{'':<11} settings: {', '.join(setting_names(preset))}")
        print("arms:", " ".join(ARM_BY_LABEL))
        return 0
    try:
        preset = get_preset(args.preset)
        arms = select_arms(args.arms, preset)
        unknown = sorted(set(args.settings or ()) - set(setting_names(preset)))
        if unknown:
            raise ConfigError(
                f"preset {preset.name!r} has no setting {', '.join(unknown)}; choose "
                f"from {', '.join(setting_names(preset))}"
            )
        if args.dry_run:  # needs no GPU: that is the point of it
            for arm in arms:
                print(plan(preset.config(arm, seed=0, lr=None), args.gpus).table() + "\n")
            return 0
        if preset.gpu and not torch.cuda.is_available():
            raise ConfigError(
                f"preset {preset.name!r} follows the paper's GPU protocol and "
                "needs CUDA; use --preset quick or reference on this machine"
            )
        if args.jobs is not None and args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
        jobs = 1 if preset.gpu else (args.jobs or jobs_default())
        out = Path(args.out or f"runs/reproduce/{preset.name}")
        if args.cache_sweep is not None:
            if not out.is_dir():
                raise ConfigError(f"--cache-sweep copies the runs under --out; {out} is not a directory")
            print(
                f"copied {cache_sweep(out, Path(args.cache_sweep))} finished runs' small files to "
                f"{args.cache_sweep}"
            )
            return 0
        if args.report_only and not out.is_dir():
            raise ConfigError(
                f"--report-only needs the runs of a preset under --out; {out} is not a directory"
            )
        if not args.report_only:
            run_preset(
                preset,
                out,
                arms,
                Runner(jobs, progress=not args.no_progress and jobs == 1),
                args.seeds,
                args.settings,
            )
        if preset.data == "bundled":
            write_reference_lines(preset, out)
    except (ConfigError, CorpusError, RecipeError, NotWritable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    figures_dir = Path(args.figures or out / "figures")
    report = write_report(out, out / "report.md", figures_dir=figures_dir, preview=preview_line(preset))
    made, problems = render_all(out, figures_dir)
    for problem in problems:
        print(f"figure skipped: {problem}", file=sys.stderr)
    print(f"{len(made) // 2} figures (PNG and PDF) in {figures_dir}; report in {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
