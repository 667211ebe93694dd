"""Memory accounting: model + optimizer state, as the paper counts it and as measured.

The paper counts ``GB = 2 bytes x (parameters + optimizer-state elements) / 1e9`` (pure bf16
weights and states; gradients and activations not counted). The state elements come from
each recipe's own declaration (``Recipe.state_rules``, ``analysis.optim.state``), the one
source for this table, ``--optimizer list`` and the report.

Where the paper counts differently from what runs here, the difference is a named convention
(``convention="paper"`` vs ``"implemented"``), and with it every one of the paper's 24 figures
is reproduced at its printed precision (``paper_figure``; a test checks each):

- parameters are the paper's quoted counts (``paper.MODEL_PARAMETERS``; 7B: 6.738B, so SGD
  is 13.476 GB), not our count from the config (6.7388B with the norms);
- SGD keeps no state (ours updates the norm gains with Adam: 0.5M elements at 7B);
- Muon keeps one buffer per parameter (``torch.optim.Muon`` is paired with AdamW, two moments,
  on the embedding, output layer and vectors);
- APOLLO regenerates its random projection from a seed (pytorch-optimizer stores it), and
  APOLLO-Mini's rank-1 moments are not counted (under 0.01 GB at 1B and 7B). One figure
  breaks this and follows what runs here instead (``PAPER_EXCEPTIONS``): APOLLO at 1B is
  listed with GaLore and Fira at 4.76, the projection stored, while its 7B figure (16.14)
  counts it regenerated (stored: 16.62; regenerated at 1B: 4.41), so no single rule gives both;
- Adam's figures are the sum of the separately rounded weight and state terms: 1B
  2.68 + 5.36 = 8.04 and 130M 0.27 + 0.54 = 0.81, where the unrounded sums give 8.03 and 0.80
  (this reading also gives Adam's 60M, 350M and 7B figures; no other row needs it).

Ranks follow the papers: 128 / 256 / 256 / 512 for 60M / 130M / 350M / 1B and 256 for 7B
(the 350M rank could not be confirmed from the paper). ``measured_state`` instantiates a
model, takes one optimizer step and counts the elements of the tensors in
``optimizer.state``; a test checks it equals the declaration for every recipe and CPU model.

``python -m analysis.results.memory`` (``scale-lab memory``) prints both tables.
"""

from __future__ import annotations

import sys

import torch
from tqdm.auto import tqdm

from analysis.arguments import Parser, output_file
from analysis.optim import recipes
from analysis.optim.inspection import state_bytes, state_numel
from analysis.optim.recipes import build_optimizer, recipe_names
from analysis.optim.roles import ROLES
from analysis.optim.state import NO_STATE, SUBSPACE_SEEDED, per_element, total_elements
from analysis.results.paper import MODEL_PARAMETERS
from toy_models.llama import (
    CPU_MODELS,
    PAPER_MODELS,
    build_model,
    load_config,
    matrix_shapes,
    parameter_counts,
    read_config,
)

PAPER_RANK = {"60m": 128, "130m": 256, "350m": 256, "1b": 512, "7b": 256}
TABLE_RECIPES = ("sgd", "scale", "apollo_mini", "apollo", "galore", "muon", "adamw")
# How the paper counts where it differs from what runs here (see the module docstring).
PAPER_CONVENTION = {
    "sgd": {role: NO_STATE for role in ROLES},
    "muon": {role: per_element(1) for role in ROLES},
    "apollo": {role: per_element(2) for role in ROLES} | {"hidden": SUBSPACE_SEEDED},
    "apollo_mini": {role: per_element(2) for role in ROLES} | {"hidden": NO_STATE},
}


def default_rank(model: str, config) -> int:
    """The low-rank baselines' rank: the papers' for their models, ``hidden / 4`` otherwise."""
    return PAPER_RANK.get(model, max(1, config.hidden_size // 4))


def state_elements(
    recipe: str, config, rank: int, momentum: str | None = None, convention: str = "implemented"
) -> int:
    """Optimizer-state elements of ``recipe`` for a LLaMA ``config`` at ``rank``, from the
    recipe's declaration (``convention="paper"``: as the paper counts it)."""
    shapes = [(role, shape) for _, role, shape in matrix_shapes(config)]
    if convention == "paper" and recipe in PAPER_CONVENTION:
        return total_elements(PAPER_CONVENTION[recipe], shapes, rank)
    return recipes.declared_state_elements(recipe, shapes, rank, momentum)


def analytic_terms(recipe: str, model: str, convention: str = "paper") -> tuple[float, float]:
    """``(weights GB, state GB)`` at 2 bytes per element for a named model (``paper``: the
    paper's quoted parameter count where it has one)."""
    config = read_config(model)  # shapes only: no transformers import before the table prints
    params = parameter_counts(config)["total"]
    if convention == "paper" and model in MODEL_PARAMETERS:
        params = MODEL_PARAMETERS[model][0]
    state = state_elements(recipe, config, default_rank(model, config), convention=convention)
    return 2 * params / 1e9, 2 * state / 1e9


def analytic_gb(recipe: str, model: str, convention: str = "paper") -> float:
    """``2 bytes x (parameters + state elements) / 1e9`` for a named model."""
    return sum(analytic_terms(recipe, model, convention))


# Figures of the paper that follow what runs here rather than its own convention (docstring).
PAPER_EXCEPTIONS = {("apollo", "1b"): "implemented"}


def paper_figure(recipe: str, model: str, digits: int = 2) -> float:
    """The paper's printed figure, reproduced: the paper convention rounded to ``digits``,
    Adam's as the sum of its rounded weight and state terms (module docstring)."""
    weights, state = analytic_terms(recipe, model, PAPER_EXCEPTIONS.get((recipe, model), "paper"))
    if recipe == "adamw":
        return round(round(weights, digits) + round(state, digits), digits)
    return round(weights + state, digits)


def measured_state(recipe: str, model_name: str, steps: int = 1) -> dict:
    """Instantiate ``model_name``, take ``steps`` optimizer steps, count the state held:
    ``{"elements", "bytes", "analytic"}`` (``analytic`` from the recipe's declaration)."""
    config = load_config(model_name)
    model = build_model(config)
    # one Newton-Schulz iteration: the state's size does not depend on the count, and the
    # five of a real step take a minute in bf16 on a CPU without bf16 matrix units (muon, mini)
    optimizer = build_optimizer(recipe, model, rank=default_rank(model_name, config), ns_steps=1)
    x = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {
        "elements": state_numel(optimizer),
        "bytes": state_bytes(optimizer),
        "analytic": state_elements(recipe, config, default_rank(model_name, config)),
    }


def paper_table(models=PAPER_MODELS, names=TABLE_RECIPES) -> str:
    """The paper's memory table (GB per recipe and model) from the declarations: its convention
    (``paper_figure``, its printed numbers), then what runs here where that differs."""
    head = f"{'GB (2 bytes x (params + state))':<34}" + "".join(f"{m:>9}" for m in models)
    rows = [head]
    for recipe in names:
        rows.append(f"{recipe:<34}" + "".join(f"{paper_figure(recipe, m):>9.2f}" for m in models))
        if recipe in PAPER_CONVENTION:
            rows.append(
                f"{recipe + ' (as implemented here)':<34}"
                + "".join(f"{analytic_gb(recipe, m, 'implemented'):>9.2f}" for m in models)
            )
    return "\n".join(rows)


MEASURED_HEAD = f"{'recipe':<14}{'model':<8}{'analytic elems':>16}{'measured elems':>16}{'bytes':>12}  match"


def measured_rows(models=CPU_MODELS, names=None):
    """One row per (model, recipe): declared (``analytic``) and measured state elements and
    bytes, each yielded as soon as measured."""
    for model in models:
        for recipe in names or recipe_names():
            yield {"recipe": recipe, "model": model} | measured_state(recipe, model)


def measured_line(row: dict) -> str:
    """One ``measured_rows`` row as a line under ``MEASURED_HEAD``."""
    ok = "yes" if row["elements"] == row["analytic"] else "no (library keeps non-tensor state)"
    return (
        f"{row['recipe']:<14}{row['model']:<8}{row['analytic']:>16,}{row['elements']:>16,}"
        f"{row['bytes']:>12,}  {ok}"
    )


def cuda_peak_table(model: str = "60m", names=TABLE_RECIPES, batch: int = 8, seq_len: int = 256) -> str:
    """Peak allocated memory of one bf16 training step per recipe (needs a GPU)."""
    rows = [f"{'recipe':<14}{'peak allocated (GB)':>22}"]
    for recipe in names:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        config = load_config(model)
        net = build_model(config, dtype=torch.bfloat16).cuda()
        opt = build_optimizer(recipe, net, rank=default_rank(model, config))
        x = torch.randint(0, config.vocab_size, (batch, seq_len), device="cuda")
        for _ in range(2):
            net(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad()
        rows.append(f"{recipe:<14}{torch.cuda.max_memory_allocated() / 1e9:>22.3f}")
        del net, opt
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """``scale-lab memory``: print the paper's table and the measured one (``--out`` writes it)."""
    parser = Parser(prog="scale-lab memory", description=__doc__.splitlines()[0])
    parser.add_argument("--no-measure", action="store_true", help="skip the instantiated models")
    parser.add_argument("--cuda", action="store_true", help="also measure peak CUDA memory (GPU)")
    parser.add_argument("--out", default=None, type=output_file, help="also write the tables to this file")
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        print("error: --cuda needs a GPU; torch sees none", file=sys.stderr)
        return 2
    # the analytic table at once; the measured rows stream as each model is trained a step
    text = "Model + optimizer state as the paper counts it (bf16):\n" + paper_table()
    print(text, flush=True)
    if not args.no_measure:
        part = "\nOptimizer state measured after one step (CPU-sized models, fp32):\n" + MEASURED_HEAD
        print(part, flush=True)
        text += "\n" + part
        total = len(CPU_MODELS) * len(recipe_names())
        with tqdm(total=total, desc="measuring", unit="recipe", file=sys.stderr, leave=False) as bar:
            for row in map(measured_line, measured_rows()):
                bar.write(row, file=sys.stdout)  # above the bar, not through it
                sys.stdout.flush()
                text += "\n" + row
                bar.update(1)
    if args.cuda:
        part = "\nPeak CUDA memory, one bf16 step, 60m, batch 8 x 256:\n" + cuda_peak_table()
        print(part, flush=True)
        text += "\n" + part
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
