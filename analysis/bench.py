"""Benchmarks that print numbers (and write them to a file); never part of the test verdicts.

``scale-lab bench optimizer``: time of ``optimizer.step()`` alone for SCALE (readable and
fused: ``analysis.optim.fused``, built or compiled during the warm-up), torch AdamW (foreach
and fused) and torch SGD on the same model shapes with the same fixed gradients, interleaved
round-robin (so drift of the machine hits all equally), median of repeats. Targets: SCALE <=
0.6 x AdamW(foreach) and <= 1.3 x SGD; then each role's time against SGD on the same tensors,
beside the memory-pass floors of the readable and the fused step (``PASS_FLOOR``); and the
embedding on a gradient with one batch's rows (``bench_embedding_batch``).

``scale-lab bench gpu``: the GPU paths in one command (``analysis.gpu_check``).

``scale-lab bench instrument``: training time with instrumentation off, at the default
schedule in its steady state (after the dense early steps: one step in ``cheap_every``
recorded, top-k spectra every ``rows_every``) and at every step (every tier, full spectra
included): the modes take turns step by step, a round is ``cheap_every`` steps of each.
Target: default <= 3% slower.

Each figure is the median over rounds of the per-round time ratio with a 95% bootstrap
interval (``ratio_interval``); a target is met when the interval's upper bound meets it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time

import torch

from analysis.arguments import Parser, output_file
from analysis.gpu_check import main as gpu_check
from analysis.instrument.hooks import Instrumentation
from analysis.instrument.schedule import InstrumentConfig
from analysis.optim.recipes import build_optimizer
from analysis.provenance import cpu_model
from toy_models.data import load_blocks
from toy_models.llama import build_model, load_config, model_names
from toy_models.tokenizer import load_tokenizer


def ratio_interval(numerator: list[float], denominator: list[float], seed: int = 0) -> dict:
    """Median over rounds of the per-round ratio ``numerator_i / denominator_i`` and a 95%
    bootstrap interval of that median (``scipy.stats.bootstrap``, percentile method, 2000
    resamples): rounds are interleaved, so each ratio compares like with like in time."""
    import numpy as np
    from scipy.stats import bootstrap

    ratios = np.asarray(numerator) / np.asarray(denominator)
    ci = bootstrap(
        (ratios,), np.median, confidence_level=0.95, n_resamples=2000, method="percentile", random_state=seed
    ).confidence_interval
    return {
        "median": float(np.median(ratios)),
        "low": float(ci.low),
        "high": float(ci.high),
        "rounds": len(ratios),
    }


def _fmt(r: dict, minus_one: bool = False) -> str:
    if minus_one:
        return (
            f"{100 * (r['median'] - 1):+.1f}% [95% CI {100 * (r['low'] - 1):+.1f}%, "
            f"{100 * (r['high'] - 1):+.1f}%]"
        )
    return f"{r['median']:.2f} [95% CI {r['low']:.2f}, {r['high']:.2f}]"


def _optimizers(model):
    params = list(model.parameters())
    return {
        "scale": build_optimizer("scale", model),
        "scale_fused": build_optimizer("scale", model, fused=True),
        "adamw_foreach": torch.optim.AdamW(params, lr=1e-3, foreach=True),
        "adamw_fused": torch.optim.AdamW(params, lr=1e-3, fused=True),
        "sgd": torch.optim.SGD(params, lr=1e-3, foreach=True),
    }


def _bench_model(model_name: str):
    """``model_name``'s shapes (the CPU-sized configs at an 8192-token vocabulary)."""
    small = model_name in ("nano", "micro", "mini")
    return build_model(load_config(model_name, vocab_size=8192 if small else None))


def _step_times(optimizers: dict, repeats: int, warmup: int, after_round=None) -> dict[str, list[float]]:
    """Seconds of each optimizer's ``step()``, interleaved round-robin over ``warmup + repeats``
    rounds (the warm-up ones not kept); ``after_round`` runs untimed after each round."""
    times = {name: [] for name in optimizers}
    for i in range(warmup + repeats):
        for name, opt in optimizers.items():
            start = time.perf_counter()
            opt.step()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times[name].append(elapsed)
        if after_round is not None:
            after_round()
    return times


def bench_optimizer(model_name: str, repeats: int = 20, warmup: int = 3) -> dict:
    """Median seconds of one ``step()`` per optimizer on ``model_name``'s shapes (fp32)."""
    model = _bench_model(model_name)
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    optimizers = _optimizers(model)
    with torch.no_grad():
        snapshot = [p.clone() for p in model.parameters()]

    @torch.no_grad()
    def restore():  # keep weights bounded across repeats
        for p, s in zip(model.parameters(), snapshot):
            p.copy_(s)

    times = _step_times(optimizers, repeats, warmup, after_round=restore)
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "model": model_name,
        "median_ms": {k: v * 1e3 for k, v in med.items()},
        "scale_over_adamw_foreach": ratio_interval(times["scale"], times["adamw_foreach"]),
        "scale_over_adamw_fused": ratio_interval(times["scale"], times["adamw_fused"]),
        "scale_over_sgd": ratio_interval(times["scale"], times["sgd"]),
        "fused_over_sgd": ratio_interval(times["scale_fused"], times["sgd"]),
        "fused_over_adamw_fused": ratio_interval(times["scale_fused"], times["adamw_fused"]),
    }


# Memory passes over a matrix's elements per step, SCALE / SGD (reads and writes of g, p, m):
# SGD reads g and p and writes p (3); normalization reads g once more for its row norms (4);
# on the output layer momentum reads g and m and writes m, then the norms read m (3 + 1 + 3).
# Fused (a row reduced and updated while in cache): 3 on the hidden matrices, 5 on the output
# layer; the embedding's column norms need the whole matrix first, so it stays at 4. A write
# counts as much as a read here; where writes cost less (the 2-core Xeon of these notes: the
# output layer's fused step measured 1.41-1.56, under its 1.67), counting reads alone
# gives 1.00 / 1.50 / 1.50, a size-weighted 1.28 on the 60m shapes either way.
PASS_FLOOR = {"hidden": 4 / 3, "embedding": 4 / 3, "output": 7 / 3}
FUSED_PASS_FLOOR = {"hidden": 3 / 3, "embedding": 4 / 3, "output": 5 / 3}


def bench_roles(model_name: str, repeats: int = 20, warmup: int = 3) -> dict:
    """SCALE's step (readable and fused) on one role's matrices against torch SGD (foreach) on
    the same tensors, interleaved: where the time goes, beside each role's memory-pass floors
    (``PASS_FLOOR``, ``FUSED_PASS_FLOOR``)."""
    model = _bench_model(model_name)
    scale = build_optimizer("scale", model)
    fused = build_optimizer("scale", model, fused=True)
    gen = torch.Generator().manual_seed(0)
    grads = {p: torch.randn(p.shape, generator=gen) * 1e-3 for p in model.parameters()}
    out = {}
    for role in PASS_FLOOR:
        params = [p for g in scale.param_groups if g["label"] == role for p in g["params"]]
        sgd = torch.optim.SGD(params, lr=1e-3, foreach=True)
        for p in model.parameters():
            p.grad = grads[p] if any(p is q for q in params) else None
        times = _step_times({"scale": scale, "fused": fused, "sgd": sgd}, repeats, warmup)
        out[role] = {
            "elements": sum(p.numel() for p in params),
            "scale_over_sgd": ratio_interval(times["scale"], times["sgd"]),
            "fused_over_sgd": ratio_interval(times["fused"], times["sgd"]),
            "floor": PASS_FLOOR[role],
            "fused_floor": FUSED_PASS_FLOOR[role],
        }
    for p in model.parameters():
        p.grad = None
    return out


def bench_embedding_batch(
    model_name: str, repeats: int = 20, warmup: int = 3, batch: tuple[int, int] = (32, 128)
) -> dict:
    """The embedding's fused step against torch SGD on a gradient shaped like one batch's:
    nonzero only in the rows of its tokens (``batch`` sequences x tokens of uniformly random
    ids: more distinct rows than a corpus's batch, whose tokens repeat), where the fused
    column rule skips the rows no token touched (``analysis.optim.scale_cpu.cpp``)."""
    model = _bench_model(model_name)
    weight = model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, weight.size(0), batch, generator=gen).unique()
    for p in model.parameters():
        p.grad = None
    weight.grad = torch.zeros_like(weight)
    weight.grad[rows] = torch.randn(len(rows), weight.size(1), generator=gen) * 1e-3
    fused = build_optimizer("scale", model, fused=True)
    sgd = torch.optim.SGD([weight], lr=1e-3, foreach=True)
    times = _step_times({"fused": fused, "sgd": sgd}, repeats, warmup)
    return {
        "rows": len(rows),
        "vocab": weight.size(0),
        "batch": list(batch),
        "fused_over_sgd": ratio_interval(times["fused"], times["sgd"]),
    }


INSTRUMENT_MODES = {
    "off": None,
    "default": InstrumentConfig(),
    "per_head": InstrumentConfig(per_head=True),
    "every_step": InstrumentConfig(every_step=True),
}


def bench_instrument(
    model_name: str = "micro",
    rounds: int = 20,
    steps_per_round: int = 10,
    batch_size: int = 8,
    micro_batch_size: int = 2,
    seq_len: int = 128,
    modes: tuple[str, ...] = tuple(INSTRUMENT_MODES),
) -> dict:
    """Tokens/s of training with instrumentation off and in each of ``modes`` (default /
    default with per-head statistics / every step), interleaved. Fewer modes put more rounds
    into the same time: the interval narrows as one over the square root of the rounds."""

    tokenizer = load_tokenizer()
    data = load_blocks(tokenizer, seq_len)
    modes = {mode: INSTRUMENT_MODES[mode] for mode in ("off", *modes) if mode in INSTRUMENT_MODES}
    total = rounds * steps_per_round
    setups = {}
    for mode, cfg in modes.items():
        model = build_model(load_config(model_name, vocab_size=len(tokenizer)))
        opt = build_optimizer("scale", model)
        # steady state: past the dense early phase (every step up to dense_until), so the
        # default schedule records one step in cheap_every; the last step is far away
        monitor = (
            Instrumentation(model, opt, None, cfg, last_step=10**9, data=data, start_step=10 * cfg.full_every)
            if cfg
            else None
        )
        setups[mode] = (model, opt, monitor, [0])
    elapsed: dict[str, list[float]] = {mode: [] for mode in modes}  # seconds per round
    accum = batch_size // micro_batch_size
    with contextlib.ExitStack() as hooks:  # each mode's hooks stay on its own model throughout
        for _model, _opt, monitor, _step in setups.values():
            if monitor is not None:
                hooks.enter_context(monitor)
        for _ in range(rounds):
            spent = dict.fromkeys(modes, 0.0)
            # the modes take turns step by step: the machine's drift over a round (seconds)
            # falls on all of them alike
            for _ in range(steps_per_round):
                for mode, (model, opt, monitor, step) in setups.items():
                    start = time.perf_counter()
                    batch = data.train_batch(step[0], batch_size)
                    for mb in batch.split(micro_batch_size):
                        loss = model(input_ids=mb, labels=mb).loss
                        if monitor is not None:
                            monitor.micro_batch(1.0 / accum, mb.size(0))
                        (loss / accum).backward()
                    opt.step()
                    opt.zero_grad()
                    step[0] += 1
                    spent[mode] += time.perf_counter() - start
            for mode in modes:
                elapsed[mode].append(spent[mode])
    tokens = total * batch_size * seq_len
    tps = {mode: tokens / sum(t) for mode, t in elapsed.items()}
    # a round of steps_per_round = cheap_every steps holds one recorded step of the default
    # schedule, so every round's ratio measures the same mix
    return {
        "model": model_name,
        "tokens_per_s": tps,
        **{
            f"{mode}_time_ratio": ratio_interval(elapsed[mode], elapsed["off"])
            for mode in modes
            if mode != "off"
        },
    }


def main(argv: list[str] | None = None) -> int:
    """``scale-lab bench optimizer|instrument|gpu``: print the numbers (and write them with
    --out); ``gpu`` is ``analysis.gpu_check`` (its own flags)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gpu"]:
        return gpu_check(argv[1:])
    parser = Parser(prog="scale-lab bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "what",
        choices=("optimizer", "instrument", "gpu"),
        help="gpu: the GPU check (scale-lab bench gpu --help)",
    )
    parser.add_argument("--models", default=None, help="comma-separated model configs")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--modes",
        default=",".join(m for m in INSTRUMENT_MODES if m != "off"),
        help="instrument: the schedules timed against 'off' (fewer: more rounds "
        "in the same time, a narrower interval)",
    )
    parser.add_argument(
        "--out", default=None, type=output_file, help="write the results as JSON to this file"
    )
    args = parser.parse_args(argv)
    names = (args.models or ("micro,60m" if args.what == "optimizer" else "micro")).split(",")
    unknown = [n for n in names if n not in model_names()]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; choose from {', '.join(model_names())}", file=sys.stderr)
        return 2
    modes = tuple(args.modes.split(","))
    wrong = [m for m in modes if m not in INSTRUMENT_MODES or m == "off"]
    if wrong:
        print(
            f"error: unknown --modes entry {wrong[0]!r}; choose from "
            f"{', '.join(m for m in INSTRUMENT_MODES if m != 'off')}",
            file=sys.stderr,
        )
        return 2
    machine = {"cpu": cpu_model(), "threads": torch.get_num_threads()}
    print(
        f"machine: {machine['cpu']}, {machine['threads']} threads (the ratios move between "
        "machines of one kind: compare within a run)"
    )
    results = []
    if args.what == "optimizer":
        for name in names:
            r = bench_optimizer(name, repeats=args.repeats or 20)
            results.append(r)
            ms = "  ".join(f"{k} {v:.2f} ms" for k, v in r["median_ms"].items())
            print(
                f"{name}: {ms}\n  SCALE / AdamW(foreach)       = {_fmt(r['scale_over_adamw_foreach'])} "
                f"(target <= 0.6)\n  SCALE / AdamW(fused)         = {_fmt(r['scale_over_adamw_fused'])}"
                f"\n  SCALE fused / AdamW(fused)   = {_fmt(r['fused_over_adamw_fused'])}"
            )
            for label, key in (("SCALE / SGD", "scale_over_sgd"), ("SCALE fused / SGD", "fused_over_sgd")):
                ratio = r[key]
                print(
                    f"  {label:<28} = {_fmt(ratio)} (target <= 1.3: "
                    f"{'met' if ratio['high'] <= 1.3 else 'not met'}, judged on the upper bound)"
                )
            r["roles"] = bench_roles(name, repeats=args.repeats or 20)
            for role, row in r["roles"].items():
                print(
                    f"    {role:<9} ({row['elements'] / 1e6:5.1f}M elements) SCALE / SGD = "
                    f"{_fmt(row['scale_over_sgd'])}, fused {_fmt(row['fused_over_sgd'])}; "
                    f"memory-pass floors {row['floor']:.2f}, fused {row['fused_floor']:.2f}"
                )
            e = r["embedding_batch"] = bench_embedding_batch(name, repeats=args.repeats or 20)
            print(
                f"    embedding, one {e['batch'][0]} x {e['batch'][1]} batch's rows ({e['rows']:,} of "
                f"{e['vocab']:,}; the others skipped): fused / SGD = {_fmt(e['fused_over_sgd'])}"
            )
    else:
        for name in names:
            r = bench_instrument(name, rounds=args.repeats or 20, modes=modes)
            results.append(r)
            tps = "  ".join(f"{k} {v:,.0f}" for k, v in r["tokens_per_s"].items())
            print(f"{name}: tokens/s {tps} ({args.repeats or 20} interleaved rounds)")
            for mode in modes:
                ratio = r[f"{mode}_time_ratio"]
                target = (
                    f" (target <= +3%: {'met' if ratio['high'] <= 1.03 else 'not met'}, judged "
                    f"on the upper bound; interval +-{50 * (ratio['high'] - ratio['low']):.1f}%)"
                    if mode == "default"
                    else ""
                )
                print(f"  {mode:<16} {_fmt(ratio, minus_one=True)}{target}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump([machine | r for r in results], handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
