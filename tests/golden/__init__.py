"""Golden training losses: the first steps of every recipe on ``nano``, checked in so that any
silent change of behaviour shows up in CI (``tests/analysis/test_golden_losses.py``).

Regenerate them on purpose (after a change of behaviour that is meant, and say so in the
commit) with::

    python -m tests.golden --write

The setting is fixed here: ``nano`` on the bundled corpus, fp32 on CPU, seed 0, each recipe at
its default learning rates, batch 8 x 64 tokens, 20 steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "nano_losses.json"
STEPS = 20
RTOL = 1e-5


def config(recipe: str):
    """The fixed training setting of the golden losses for ``recipe``."""
    from analysis.train import TrainConfig

    return TrainConfig(model="nano", optimizer=recipe, steps=STEPS, batch_size=8, seq_len=64,
                       eval_every=0, eval_tokens=504, device="cpu", precision="fp32", seed=0)


def losses(recipe: str) -> list[float]:
    """The first ``STEPS`` training losses of ``recipe`` in the golden setting."""
    from analysis.train import train

    return train(config(recipe), progress=False).losses


def load() -> dict[str, list[float]]:
    return json.loads(GOLDEN.read_text())


def main(argv: list[str] | None = None) -> int:
    from analysis.optim.recipes import recipe_names

    p = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"overwrite {GOLDEN.name}")
    args = p.parse_args(argv)
    table = {name: losses(name) for name in recipe_names()}
    if args.write:
        GOLDEN.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {len(table)} recipes x {STEPS} losses to {GOLDEN}")
    else:
        print(json.dumps(table, indent=1))
    return 0
