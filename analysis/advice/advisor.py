"""``advise(model, batches, budget=...)``: where *your* model needs momentum, under a memory
budget, as a table, a curve, a figure and a recipe to train (the method: ``analysis.advice``).

``memory_table(name)`` is the memory side alone, from a config's shapes (no model is built):
the paper's 60M..7B included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from analysis.advice.plan import best_under, curve, groups, marks, parse_budget, predicted_gains
from analysis.advice.probe import ProbeConfig, probe
from analysis.optim.placement import write_placement
from analysis.optim.recipes import get_recipe
from analysis.optim.roles import assign
from analysis.optim.state import total_elements
from analysis.results import style
from toy_models.llama import load_config, matrix_shapes


@dataclass
class Advice:
    """What ``advise`` found: per-matrix rows (``matrices``), the groups (``table``, with
    ``chosen``), the frontier (``curve``), the known placements (``marks``), the budget in
    bytes, the momentum patterns to train (``momentum_on``) and notes (tied matrices)."""

    matrices: pd.DataFrame
    table: pd.DataFrame
    curve: pd.DataFrame
    marks: dict[str, tuple[int, float]]
    budget_bytes: float
    beta: float
    vector_bytes: int
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> pd.DataFrame:
        return self.table[self.table["chosen"]]

    @property
    def momentum_on(self) -> list[str]:
        return [p for patterns in self.chosen["patterns"] for p in patterns]

    @property
    def state_bytes(self) -> int:
        return 2 * self.vector_bytes + int(self.chosen["bytes"].sum())

    @property
    def predicted_gain(self) -> float:
        return float(self.chosen["gain"].sum())

    def recipe(self, lr: float | None = None) -> dict:
        """The keyword arguments that build the advised optimizer:
        ``build_optimizer(**advice.recipe(), model=model)`` or ``TrainConfig`` fields."""
        return {"name": "col_norm", "momentum_on": tuple(self.momentum_on), "beta": self.beta} | (
            {"lr": lr} if lr is not None else {}
        )

    def lines(self) -> list[str]:
        """The advice as text: the groups with gain, cost and choice, then the totals beside
        SCALE, col_norm+all and AdamW."""
        out = [f"{'group':<44} {'roles':<16} {'MB':>8} {'gain':>10} {'+-':>9}  momentum"]
        for r in self.table.itertuples():
            out.append(
                f"{r.group[:44]:<44} {r.roles[:16]:<16} {r.bytes / 1e6:>8.3f} {r.gain:>10.3g} "
                f"{r.gain_std:>9.2g}  {'yes' if r.chosen else '-'}"
            )
        adamw = self.marks["adamw"][0]
        out.append(
            f"budget {self.budget_bytes / 1e6:.3f} MB ({self.budget_bytes / adamw:.0%} of AdamW's state): "
            f"advised state {self.state_bytes / 1e6:.3f} MB ({self.state_bytes / adamw:.0%}), predicted "
            f"gain {self.predicted_gain:.3g}"
        )
        for name in ("scale", "col_norm+all"):
            size, gain = self.marks[name]
            out.append(f"  {name}: state {size / 1e6:.3f} MB ({size / adamw:.0%}), predicted gain {gain:.3g}")
        return out + [f"note: {n}" for n in self.notes]

    def figure(self):
        """The predicted gain against optimizer state (the frontier), the known placements and
        the advised one marked; the budget as a vertical line."""
        fig, (ax,) = style.figure(1)
        adamw = self.marks["adamw"][0]
        ax.step(
            self.curve["state_bytes"] / adamw,
            self.curve["gain"],
            where="post",
            color="0.3",
            label="best placement",
        )
        for name, (size, gain) in self.marks.items():
            if name != "adamw":
                ax.plot(size / adamw, gain, "o", label=name)
        ax.plot(self.state_bytes / adamw, self.predicted_gain, "*", ms=12, color="crimson", label="advised")
        ax.axvline(self.budget_bytes / adamw, color="crimson", lw=0.8, ls="--")
        ax.axvline(1.0, color="0.5", lw=0.8, ls=":", label="AdamW's state")
        ax.set(
            xlabel="optimizer state / AdamW's",
            ylabel="predicted gain (Theorem 2.1 weight x variance)",
            title="Where momentum pays: predicted gain against state",
        )
        ax.legend(fontsize=7)
        return fig

    def save(self, out: str | Path, lr: float | None = None) -> dict[str, Path]:
        """Write ``matrices.csv``, ``advice.csv``, ``curve.csv``, ``advice.png`` and the placement
        file ``placement.json`` (``scale-lab train --optimizer advised:PATH``) under ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            name: out / name
            for name in ("matrices.csv", "advice.csv", "curve.csv", "advice.png", "placement.json")
        }
        self.matrices.to_csv(paths["matrices.csv"], index=False)
        self.table.to_csv(paths["advice.csv"], index=False)
        self.curve.to_csv(paths["curve.csv"], index=False)
        fig = self.figure()
        fig.savefig(paths["advice.png"], dpi=150)
        about = {
            "predicted_gain": self.predicted_gain,
            "state_bytes": self.state_bytes,
            "budget_bytes": self.budget_bytes,
        }
        write_placement(paths["placement.json"], "col_norm", self.momentum_on, self.beta, **about)
        return paths


def advise(
    model: torch.nn.Module,
    batches: Sequence,
    budget: float | str = 0.3,
    by: str = "block",
    beta: float = 0.9,
    loss_fn: Callable | None = None,
    probe_config: ProbeConfig | None = None,
    rules=None,
) -> Advice:
    """Probe ``model`` on ``batches`` (``analysis.advice.probe``), predict each group's gain of
    momentum and place it under ``budget`` (a fraction of AdamW's state, or a size such as
    ``"12MB"``), exactly (``analysis.advice.plan``). ``rules``: role rules for a model the
    defaults cannot assign (``analysis.optim.roles``)."""
    layout = assign(model, rules)  # a model the roles cannot assign fails here, in one line
    sizes = {n: p.param.numel() * p.param.element_size() for n, p in layout.params.items()}
    vector_bytes = sum(sizes[n] for n, p in layout.params.items() if p.role == "vector")
    budget_bytes = parse_budget(budget, 2 * sum(sizes.values()))  # a bad budget fails before the probe
    matrices = predicted_gains(probe(model, batches, loss_fn, probe_config or ProbeConfig(), rules), beta)
    table = groups(matrices, by)
    known = marks(matrices, vector_bytes)
    chosen = set(best_under(table, budget_bytes - 2 * vector_bytes))
    table["chosen"] = [i in chosen for i in table.index]
    return Advice(
        matrices,
        table,
        curve(table, vector_bytes),
        known,
        budget_bytes,
        beta,
        vector_bytes,
        _notes(model, layout),
    )


def _notes(model, layout) -> list[str]:
    """What a reader of the advice should know about the model's matrices: a tied
    embedding/output matrix is one parameter with one buffer serving both roles."""
    notes = []
    get_in, get_out = (
        getattr(model, "get_input_embeddings", None),
        getattr(model, "get_output_embeddings", None),
    )
    if get_in and get_out and get_in() is not None and get_out() is not None:
        if get_in().weight is get_out().weight:
            name = next(n for n, p in layout.params.items() if p.param is get_in().weight)
            notes.append(
                f"{name} is tied: the embedding and the output layer are one matrix (role "
                f"{layout.params[name].role!r} here), so one momentum buffer serves both roles and "
                "its variance is the sum of both uses' gradients"
            )
    return notes


def memory_table(name: str) -> pd.DataFrame:
    """The memory side of the advice from a LLaMA config's shapes alone (``toy_models.llama``):
    per placement, the optimizer state in MB (float32) and as a share of AdamW's, from the
    recipes' declared state (``analysis.optim.state``, which the dry run reads too)."""
    shapes = [(role, shape) for _, role, shape in matrix_shapes(load_config(name))]
    col_norm = get_recipe("col_norm")
    placements = {"col_norm": "none", "scale (output)": "output", "col_norm+embedding": "embedding"}
    elements = {label: total_elements(col_norm.state_rules(p), shapes, 1) for label, p in placements.items()}
    output_only = elements["scale (output)"] - elements["col_norm"]
    elements["output+embedding"] = elements["col_norm+embedding"] + output_only
    elements["col_norm+all"] = total_elements(col_norm.state_rules("all"), shapes, 1)
    elements["adamw"] = total_elements(get_recipe("adamw").state_rules(), shapes, 1)
    return pd.DataFrame(
        [
            {"placement": p, "state_MB": 4 * e / 1e6, "of_adamw": e / elements["adamw"], "model": name}
            for p, e in elements.items()
        ]
    )
