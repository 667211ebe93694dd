"""Memory accounting: model + optimizer state, as the paper counts it and as measured.

The paper counts ``GB = 2 bytes x (parameters + optimizer-state elements) / 1e9`` (pure bf16
weights and states; gradients and activations not counted). State elements per recipe, for a
matrix of shape ``m x n`` and vectors of length ``n``:

=================  =========================================================================
sgd, sign, ...      0 (plus 1 per matrix where momentum is placed); vectors: 2n (AdamW)
scale               m n on the output layer only; vectors 2n
sgd_momentum        m n on every matrix; vectors 2n
adamw               2 per parameter
muon                as implemented: m n per hidden matrix, 2 per other parameter;
                    as the paper counts it: 1 per parameter (``paper`` column)
adafactor           m + n per matrix; n per vector
swan                0 per hidden matrix (stateless); 2 per other parameter
stable_spam         2 per parameter (its 3 scalars per tensor, like step counters, not counted)
galore, fira        hidden: ``2 r max(m,n) + r min(m,n)`` (moments in the rank-r subspace +
                    the projector); 2 per other parameter
apollo              hidden: ``2 r max(m,n)`` (the random projection is regenerated from a
                    seed, not stored); 2 per other parameter; apollo_mini: r = 1
=================  =========================================================================

Ranks follow the papers: 128 / 256 / 256 / 512 for 60M / 130M / 350M / 1B and 256 for 7B
(the 350M rank could not be confirmed from the paper). ``measured`` instantiates a model,
takes one optimizer step and counts the elements of the tensors in ``optimizer.state``.

``python -m analysis.memory`` (``scale-lab memory``) prints both tables.
"""

from __future__ import annotations

import argparse
import sys

from analysis.recipes import PLACEMENTS, recipe_names
from toy_models.llama import CPU_MODELS, PAPER_MODELS, load_config, matrix_shapes

PAPER_RANK = {"60m": 128, "130m": 256, "350m": 256, "1b": 512, "7b": 256}
TABLE_RECIPES = ("sgd", "scale", "apollo_mini", "apollo", "galore", "muon", "adamw")


def _default_rank(model: str, config) -> int:
    return PAPER_RANK.get(model, max(1, config.hidden_size // 4))


def state_elements(recipe: str, config, rank: int, momentum: str | None = None,
                   convention: str = "implemented") -> int:
    """Optimizer-state elements of ``recipe`` for a LLaMA ``config`` (see the module table)."""
    placed = {"scale": ("output",), "sgd_momentum": ("embedding", "hidden", "output")}.get(
        recipe, PLACEMENTS[momentum or "none"])
    total = 0
    for _, role, shape in matrix_shapes(config):
        numel = 1
        for size in shape:
            numel *= size
        if recipe == "adamw" or (recipe == "muon" and convention == "paper"):
            total += (2 if recipe == "adamw" else 1) * numel
        elif role == "vector":
            total += numel if recipe == "adafactor" else 2 * numel
        elif recipe == "adafactor":
            total += shape[0] + shape[1]
        elif recipe == "stable_spam":
            total += 2 * numel  # its 3 scalars per tensor are not counted, like step counters
        elif recipe in ("muon", "galore", "fira", "apollo", "apollo_mini", "swan") and role != "hidden":
            total += 2 * numel
        elif recipe == "swan":
            pass  # stateless on hidden matrices
        elif recipe == "muon":
            total += numel
        elif recipe in ("galore", "fira"):
            total += 2 * rank * max(shape) + rank * min(shape)
        elif recipe in ("apollo", "apollo_mini"):
            total += 2 * (1 if recipe == "apollo_mini" else rank) * max(shape)
        elif role in placed:
            total += numel
    return total


def analytic_gb(recipe: str, model: str, convention: str = "paper") -> float:
    config = load_config(model)
    params = sum(_numel(s) for _, _, s in matrix_shapes(config))
    state = state_elements(recipe, config, _default_rank(model, config), convention=convention)
    return 2 * (params + state) / 1e9


def _numel(shape):
    n = 1
    for size in shape:
        n *= size
    return n


def measured_state(recipe: str, model_name: str, steps: int = 1) -> dict:
    """Instantiate ``model_name``, take ``steps`` optimizer steps, count the state held."""
    import torch

    from analysis.optimizer import state_bytes, state_numel
    from analysis.recipes import build_optimizer
    from toy_models.llama import build_model

    config = load_config(model_name)
    model = build_model(config)
    optimizer = build_optimizer(recipe, model, rank=_default_rank(model_name, config))
    x = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {"elements": state_numel(optimizer), "bytes": state_bytes(optimizer),
            "analytic": state_elements(recipe, config, _default_rank(model_name, config))}


def paper_table(models=PAPER_MODELS, recipes=TABLE_RECIPES) -> str:
    head = f"{'GB (2 bytes x (params + state))':<34}" + "".join(f"{m:>9}" for m in models)
    rows = [head]
    for recipe in recipes:
        rows.append(f"{recipe:<34}" + "".join(f"{analytic_gb(recipe, m):>9.2f}" for m in models))
        if recipe == "muon":
            rows.append(f"{'muon (as implemented here)':<34}"
                        + "".join(f"{analytic_gb(recipe, m, 'implemented'):>9.2f}" for m in models))
    return "\n".join(rows)


def measured_table(models=CPU_MODELS, recipes=None) -> str:
    recipes = recipes or recipe_names()
    rows = [f"{'recipe':<14}{'model':<8}{'analytic elems':>16}{'measured elems':>16}{'bytes':>12}  match"]
    for model in models:
        for recipe in recipes:
            m = measured_state(recipe, model)
            ok = "yes" if m["elements"] == m["analytic"] else "no (library keeps non-tensor state)"
            rows.append(f"{recipe:<14}{model:<8}{m['analytic']:>16,}{m['elements']:>16,}"
                        f"{m['bytes']:>12,}  {ok}")
    return "\n".join(rows)


def cuda_peak_table(model: str = "60m", recipes=TABLE_RECIPES, batch: int = 8,
                    seq_len: int = 256) -> str:
    """Peak allocated memory of one bf16 training step per recipe (needs a GPU)."""
    import torch

    from analysis.recipes import build_optimizer
    from toy_models.llama import build_model

    rows = [f"{'recipe':<14}{'peak allocated (GB)':>22}"]
    for recipe in recipes:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        config = load_config(model)
        net = build_model(config, dtype=torch.bfloat16).cuda()
        opt = build_optimizer(recipe, net, rank=_default_rank(model, config))
        x = torch.randint(0, config.vocab_size, (batch, seq_len), device="cuda")
        for _ in range(2):
            net(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad()
        rows.append(f"{recipe:<14}{torch.cuda.max_memory_allocated() / 1e9:>22.3f}")
        del net, opt
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scale-lab memory", description=__doc__.splitlines()[0])
    parser.add_argument("--no-measure", action="store_true", help="skip the instantiated models")
    parser.add_argument("--cuda", action="store_true", help="also measure peak CUDA memory (GPU)")
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    text = "Model + optimizer state as the paper counts it (bf16):\n" + paper_table()
    if not args.no_measure:
        text += "\n\nOptimizer state measured after one step (CPU-sized models, fp32):\n" + measured_table()
    if args.cuda:
        import torch
        if not torch.cuda.is_available():
            print("error: --cuda needs a GPU; torch sees none", file=sys.stderr)
            return 2
        text += "\n\nPeak CUDA memory, one bf16 step, 60m, batch 8 x 256:\n" + cuda_peak_table()
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
