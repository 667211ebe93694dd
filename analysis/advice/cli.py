"""``scale-lab advise`` (``python -m analysis.advice``): the placement advice for one of the
project's LLaMA configs (or your config JSON) on the bundled corpus, or, with ``--memory-only``,
its memory side from the config's shapes alone (the paper's 60M..7B included).

    scale-lab advise --model cpu60m-half --budget 0.3 --out runs/advice
    scale-lab advise --model cpu60m-half --budget 0.3 --verify 200 --out runs/advice
    scale-lab advise --model 7b --memory-only

The shipped ``data/recordings/advice`` is ``--budget 0.3 --track-record --verify 570 --jobs 2
--out data/recordings/advice --runs runs/advice/verify``: the advice, its verdicts and each
verification run's final loss, without the runs themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from analysis.advice.advisor import advise, memory_table
from analysis.advice.plan import GROUPINGS, parse_budget
from analysis.advice.probe import ProbeConfig
from analysis.advice.track_record import track_record
from analysis.advice.verify import verify
from analysis.arguments import Parser
from analysis.protocol.arms import tuned_points
from analysis.protocol.presets import PRESETS
from toy_models.data import load_blocks
from toy_models.llama import UnknownModelError, build_model, load_config, model_tokenizer
from toy_models.tokenizer import load_tokenizer


def parser() -> Parser:
    """The argument parser of ``scale-lab advise``."""
    p = Parser(prog="scale-lab advise", description="Where does your model need momentum?")
    p.add_argument("--model", default="cpu60m-half", help="a LLaMA config name or JSON path")
    p.add_argument(
        "--budget",
        default="0.3",
        help="optimizer state allowed: a fraction of AdamW's (0.3) or a size (12MB)",
    )
    p.add_argument(
        "--group", default="block", choices=GROUPINGS, help="place momentum per matrix, block, type or role"
    )
    p.add_argument("--beta", type=float, default=0.9, help="the momentum the advice is for")
    p.add_argument("--lr", type=float, default=3e-3, help="col_norm's lr during the probe")
    p.add_argument("--probe-steps", type=int, default=60)
    p.add_argument("--points", type=int, default=3, help="probe points after warmup")
    p.add_argument("--k", type=int, default=8, help="batch gradients per probe point")
    p.add_argument("--seeds", type=int, default=2, help="probe seeds (their spread is shown)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--out", default=None, help="write the table, curve, figure and placement.json here")
    p.add_argument("--memory-only", action="store_true", help="the memory side from shapes alone")
    p.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="STEPS",
        help="check the advice: train it, col_norm, scale and col_norm+all for STEPS steps on paired seeds",
    )
    p.add_argument(
        "--verify-seeds", type=int, default=3, help="how many of the reference's held-out seeds (from 100)"
    )
    p.add_argument(
        "--verify-lr", type=float, default=None, help="their shared lr (default: col_norm's tuned lr)"
    )
    p.add_argument("--runs", default=None, help="where the verification runs train (default: <out>/verify)")
    p.add_argument("--jobs", type=int, default=1, help="verification runs in parallel")
    p.add_argument(
        "--track-record",
        action="store_true",
        help="the advice's predictions against the placements the shipped reference measured",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``scale-lab advise``: print the advice (or the memory table); 2 with one line on bad input."""
    args = parser().parse_args(argv)
    try:
        if args.memory_only:
            print(memory_table(args.model).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            return 0
        budget = args.budget  # parse_budget reads "0.3" as a fraction and "12MB" as a size
        parse_budget(budget, 1)  # a bad budget is said before the corpus and the probe
        model, batches = _bundled(args)
        config = ProbeConfig(
            steps=args.probe_steps,
            warmup=max(1, args.probe_steps // 6),
            points=args.points,
            k=args.k,
            seeds=args.seeds,
            lr=args.lr,
        )
        advice = advise(model, batches, budget=budget, by=args.group, beta=args.beta, probe_config=config)
    except (UnknownModelError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(advice.lines()))
    written = []
    if args.track_record:
        record = track_record(advice)
        print("track record on the shipped reference (predicted vs measured gains over col_norm):")
        print("\n".join(record.lines()))
        if args.out:
            written.append(_save_track_record(record, Path(args.out)))
    if args.verify:
        lr = args.verify_lr or tuned_points().get("col_norm", (None,))[0]
        if lr is None:
            print("error: no tuned col_norm lr to verify at; pass --verify-lr", file=sys.stderr)
            return 2
        out = Path(args.out or "runs/advice")
        seeds = tuple(PRESETS["reference"].held_out_seeds[: args.verify_seeds])  # never a tuning seed
        runs = Path(args.runs) if args.runs else out / "verify"
        checked = verify(advice, args.model, args.verify, lr, seeds, runs, jobs=args.jobs)
        print(f"verification at lr {lr:g}, {args.verify} steps, seeds {list(seeds)}:")
        print("\n".join(checked.lines()))
        written += checked.save(out, lr, args.verify).values()
    if args.out:
        paths = advice.save(args.out)
        print(f"wrote {', '.join(str(p) for p in [*paths.values(), *written])}")
        print(f"train it: scale-lab train --model {args.model} --optimizer advised:{paths['placement.json']}")
    return 0


def _save_track_record(record, out: Path) -> Path:
    """``track_record.csv``: per placement the predicted and measured gain, then the pairs."""
    out.mkdir(parents=True, exist_ok=True)
    table = record.table().reset_index()
    pairs = pd.DataFrame(record.pairs, columns=["placement", "against", "verdict"])
    path = out / "track_record.csv"
    table.merge(pairs, on="placement", how="left").to_csv(path, index=False)
    return path


def _bundled(args):
    """The model (the paper's init, seed 0) and training batches of the bundled corpus."""
    tokenizer = load_tokenizer(model_tokenizer(args.model))
    config = load_config(args.model, vocab_size=len(tokenizer))
    data = load_blocks(tokenizer, args.seq_len, seed=0)
    count = args.probe_steps + args.points * args.k
    batches = [data.train_batch(step, args.batch_size) for step in range(count)]
    return build_model(config, seed=0), batches
