"""Per-head statistics of attention projections: which heads are noisier than others.

A LLaMA block's ``q_proj`` is ``(heads x head_dim, hidden)``: head ``h`` owns rows
``h d .. (h + 1) d - 1`` (``k_proj``/``v_proj`` the same with the key-value heads, GQA);
``o_proj`` is ``(hidden, heads x head_dim)``: head ``h`` owns those columns. With ``einops``,
``rearrange(g, "(h d) i -> h d i")`` and ``"o (h d) -> h o d"`` give each head's block, so each
statistic of a matrix has a per-head version whose sum over heads is the matrix's:

- ``grad_var_head``: the micro-batch estimator per head, ``(sum_k ||g_k,h||^2 - K ||g_h||^2)
  / (K - 1)`` (for q/k/v from the row sums the instrumentation already reduces; for o from
  per-head column sums taken per micro-batch);
- ``grad_row_rms_cv_head``: the spread of row RMS inside a head (q/k/v only: o's rows span heads);
- ``update_sigma_max_head``: the largest singular value of each head's update block.

Recorded as rows of the tidy table with ``param`` ``"<matrix>/head<h>"``; on when
``InstrumentConfig(per_head=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, reduce

SUFFIXES = {
    "q_proj.weight": ("heads", "rows"),
    "k_proj.weight": ("kv_heads", "rows"),
    "v_proj.weight": ("kv_heads", "rows"),
    "o_proj.weight": ("heads", "columns"),
}


@dataclass(frozen=True)
class HeadLayout:
    """How one attention matrix splits into heads: ``heads`` blocks of ``head_dim`` rows
    (``axis="rows"``) or columns (``"columns"``)."""

    heads: int
    head_dim: int
    axis: str

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``(heads, a, b)``: each head's block of the matrix."""
        if self.axis == "rows":
            return rearrange(x, "(h d) i -> h d i", h=self.heads)
        return rearrange(x, "o (h d) -> h o d", h=self.heads)

    def square_sums(self, x: torch.Tensor) -> torch.Tensor:
        """Each head's ``||x_h||^2`` (float64 totals of float32 squares)."""
        return reduce(self.blocks(x).float().square(), "h a b -> h", "sum").double()

    def from_rows(self, row_values: torch.Tensor) -> torch.Tensor:
        """Row-indexed values (a q/k/v matrix's row sums) grouped by head: ``(heads, head_dim)``."""
        return rearrange(row_values, "(h d) -> h d", h=self.heads)


def head_layouts(model, names) -> dict[str, HeadLayout]:
    """The attention matrices among ``names`` and their head layout, from the model's config
    (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``); {} for a model without one."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if not heads:
        return {}
    counts = {"heads": heads, "kv_heads": getattr(config, "num_key_value_heads", None) or heads}
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layouts = {}
    for name in names:
        for suffix, (count, axis) in SUFFIXES.items():
            if name.endswith(suffix):
                layouts[name] = HeadLayout(counts[count], head_dim, axis)
    return layouts


def head_rows(name: str, values: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """``[(param, value)]`` rows of one per-head statistic (``values`` has one entry per head)."""
    return [(f"{name}/head{h}", v) for h, v in enumerate(values)]
