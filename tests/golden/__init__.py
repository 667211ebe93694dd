"""Golden training losses: the first steps of every recipe on ``nano``, checked in so that any
silent change of behaviour shows up in CI (``tests/analysis/test_golden_losses.py``).

The setting pins what the losses depend on: ``nano`` on the bundled corpus, **float64** weights
and optimizer arithmetic on CPU, **one thread** (``torch.set_num_threads(1)`` for the run, put
back after), seed 0, each recipe at its default learning rates, batch 8 x 64 tokens, 20 steps.
In float32, machines of the same kind (AVX2 or AVX-512 kernels) and thread counts gave
APOLLO-Mini losses 7.7e-3 apart by step 20. float64 makes most of a step's rounding 2^-52
instead of 2^-23, but not all: transformers' LLaMA computes RMSNorm, the attention softmax and
the loss in float32 whatever the weights' dtype, so roundings of float32's size remain, and the
tolerances below are measured with them in.

Each recipe's tolerance is measured, not chosen: ``--write`` also runs the setting with every
initial weight moved by one float32 ulp (relative ``2^-24``) up or down (``PERTURBATIONS``
random patterns) and once with two threads, and stores the largest relative loss difference
over the steps (``sensitivity``). One float32 ulp is the size of the difference another
machine's float32 kernels make in the parts that stay float32; a float64 ulp would mostly be
rounded away there and measure nothing (Adafactor's losses did not move at all). Kernels
differ by roundings of that order at every operation, not only at the start, so the test
allows ``SAFETY`` times the measured sensitivity (at least ``FLOOR``).
A recipe whose sensitivity exceeds ``CHAOTIC`` amplifies rounding into the loss itself within
20 steps (APOLLO-Mini at its default scale on this tiny model: its rank-1 random projection
rescales the whole update by one norm ratio); one tolerance for all its steps would hide every
change, so it gets one per step, by the same rule: ``SAFETY`` times that step's relative spread
of the perturbed runs (the stored ``band``), at least ``FLOOR``. Its early steps stay checked
tightly (step 2: 2e-5 relative), its late ones, where rounding has grown into the loss, loosely.
The band itself, widened by its width, was too narrow: an AMD EPYC's float32 kernels put step 5
at 2.7 band widths from the golden loss (measured on CI); five perturbed runs sample the spread,
they do not bound it.

Regenerate on purpose (after a change of behaviour that is meant, and say so in the commit)::

    python -m tests.golden --write
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

GOLDEN = Path(__file__).resolve().parent / "nano_losses.json"
STEPS = 20
PERTURBATIONS = 4  # one-ulp patterns of the initial weights measured by --write
SAFETY = 100.0  # allowed difference / measured sensitivity
FLOOR = 16 * 2.0**-24  # the smallest relative tolerance: 16 float32 ulps of the loss, which
# transformers computes in float32 (Adafactor's 20 losses never moved)
CHAOTIC = 1e-5  # sensitivity above which a recipe is checked against its band


def config(recipe: str):
    """The fixed training setting of the golden losses for ``recipe``."""
    from analysis.training import TrainConfig

    return TrainConfig(
        model="nano",
        optimizer=recipe,
        steps=STEPS,
        batch_size=8,
        seq_len=64,
        eval_every=0,
        eval_tokens=504,
        device="cpu",
        precision="fp64",
        seed=0,
    )


@contextlib.contextmanager
def threads(n: int):
    """Run the body with ``n`` intra-op threads, then put the previous count back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def ulp_perturbed(pattern: int):
    """Builds made inside move every initial weight by one float32 ulp, ``w (1 +- 2^-24)`` (a
    random sign per entry, seeded by ``pattern``): a rounding-sized change of the start, to
    measure how rounding grows."""
    from analysis.training import setup

    build = setup.build_model

    def perturbed(*args, **kwargs):
        model = build(*args, **kwargs)
        generator = torch.Generator().manual_seed(pattern)
        with torch.no_grad():
            for p in model.parameters():
                sign = torch.randint(0, 2, p.shape, generator=generator).to(p.dtype) * 2 - 1
                p.mul_(1 + sign * 2.0**-24)
        return model

    setup.build_model = perturbed
    try:
        yield
    finally:
        setup.build_model = build


def losses(recipe: str, n_threads: int = 1, pattern: int | None = None) -> list[float]:
    """The first ``STEPS`` training losses of ``recipe`` in the golden setting (optionally with
    ``n_threads`` threads or a one-ulp ``pattern`` of the initial weights)."""
    from analysis.training import train

    perturbation = ulp_perturbed(pattern) if pattern is not None else contextlib.nullcontext()
    with threads(n_threads), perturbation:
        return train(config(recipe), progress=False).losses


def relative_gap(a: list[float], b: list[float]) -> float:
    """The largest ``|a - b| / |b|`` over the steps."""
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def measure(recipe: str) -> dict:
    """``recipe``'s golden entry: its losses, the sensitivity that sets its tolerance, and the
    band of the perturbed runs."""
    base = losses(recipe)
    variants = [losses(recipe, pattern=k) for k in range(1, PERTURBATIONS + 1)]
    variants.append(losses(recipe, n_threads=2))
    sensitivity = max(relative_gap(v, base) for v in variants)
    runs = [base, *variants]
    entry = {
        "losses": base,
        "sensitivity": sensitivity,
        "rtol": max(FLOOR, SAFETY * sensitivity),
        "chaotic": sensitivity > CHAOTIC,
    }
    if entry["chaotic"]:
        entry["band"] = [[min(r[i] for r in runs), max(r[i] for r in runs)] for i in range(STEPS)]
    return entry


def load() -> dict[str, dict]:
    """``{recipe: entry}`` as ``measure`` wrote them."""
    return json.loads(GOLDEN.read_text())["recipes"]


def step_rtol(entry: dict, step: int) -> float:
    """The relative tolerance at ``step`` (0-based): the recipe's ``rtol``, or for a chaotic one
    ``SAFETY`` times that step's relative spread of the perturbed runs, at least ``FLOOR``."""
    if not entry["chaotic"]:
        return entry["rtol"]
    lo, hi = entry["band"][step]
    return max(FLOOR, SAFETY * (hi - lo) / abs(entry["losses"][step]))


def check(recipe: str, got: list[float], entry: dict) -> list[str]:
    """The steps at which ``got`` leaves what ``entry`` allows (empty: it matches)."""
    bad = []
    for i, (x, want) in enumerate(zip(got, entry["losses"])):
        rtol = step_rtol(entry, i)
        ok = abs(x - want) <= rtol * abs(want)
        allowed = f"{want:.12g} within rtol {rtol:.2g}"
        if not ok:
            bad.append(f"{recipe} step {i + 1}: loss {x:.12g}, golden {allowed}")
    if len(got) != len(entry["losses"]):
        bad.append(f"{recipe}: {len(got)} losses, golden has {len(entry['losses'])}")
    return bad


def main(argv: list[str] | None = None) -> int:
    from analysis.optim.recipes import recipe_names

    p = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"measure and overwrite {GOLDEN.name}")
    p.add_argument("--recipes", nargs="*", default=None, help="only these (default: all)")
    args = p.parse_args(argv)
    names = args.recipes or recipe_names()
    table = {}
    for name in names:
        table[name] = measure(name)
        e = table[name]
        print(
            f"{name:14s} sensitivity {e['sensitivity']:.2e}  rtol {e['rtol']:.2e}"
            f"{'  chaotic: band check' if e['chaotic'] else ''}",
            flush=True,
        )
    if args.write:
        old = json.loads(GOLDEN.read_text()).get("recipes", {}) if GOLDEN.exists() else {}
        setting = {
            "model": "nano",
            "precision": "fp64",
            "threads": 1,
            "steps": STEPS,
            "perturbations": PERTURBATIONS,
            "safety": SAFETY,
            "floor": FLOOR,
            "chaotic_above": CHAOTIC,
        }
        GOLDEN.write_text(json.dumps({"setting": setting, "recipes": {**old, **table}}, indent=1) + "\n")
        print(f"wrote {len(table)} recipes x {STEPS} losses to {GOLDEN}")
    return 0
