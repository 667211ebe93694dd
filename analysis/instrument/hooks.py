"""Instrumentation: hooks that record gradient noise, per-unit norm statistics and update spectra.

``with Instrumentation(model, optimizer, recorder, config, last_step=...) as monitor:`` installs

1. a tensor pre-hook on every parameter (``param.register_hook``): it fires once per
   micro-batch with that micro-batch's gradient *before* it is accumulated into ``.grad``
   (also under DDP, where it is the local gradient); on scheduled steps it adds
   ``||g_k||^2`` and the per-row ``||g_k[i]||^2`` to float64 sums kept on the device;
2. an optimizer step pre-hook: snapshots the weights (for the realized update) and runs the
   paper's probe on scheduled steps;
3. an optimizer step post-hook: the final (synchronized) gradient is still in ``.grad``; it
   computes every statistic on the device, moves them to the host in one transfer and writes
   tidy rows ``{step, param, role, stat, value}`` (rank 0 only);
4. a tap hook on *this* optimizer (``ChainedOptimizer.register_tap_hook``) that receives the
   intended update (and the momentum) from recipes built on ``ChainedOptimizer``; for other
   optimizers the intended update is ``-(W_new - W_old)/lr``. Two instrumented optimizers
   alive at once each hear only their own taps.

Every handle is removed on exit, also on exceptions. Hooks never modify gradients, weights,
``.grad`` or the RNG, so training is bitwise the same with instrumentation on or off.

The training loop tells the monitor about each micro-batch with ``micro_batch(weight, n)``
before its backward: ``weight`` is the factor its mean loss was multiplied by (the hook
divides it out) and ``n`` its number of sequences. On a recorded step the loop cuts each
micro-batch into ``pieces(accum, micro)`` equal parts, so that the variance across
micro-batches has at least ``MIN_MICRO_BATCHES`` of them even when the batch is one
micro-batch (the default); the step's gradient is then the same sum taken in smaller pieces
(equal up to float rounding, so bitwise equality with an uninstrumented run holds only for
batches that already have ``MIN_MICRO_BATCHES`` micro-batches).

Statistics: the formulas in ``analysis.instrument.estimators`` and ``analysis.instrument.spectra``;
every recorded name and what it measures in ``analysis.instrument.stat_names``.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

import analysis.instrument.spectra as spectra
from analysis.instrument.estimators import (
    cosine,
    microbatch_variance,
    noise_scale,
    norm64,
    paper_probe,
    sqnorm,
)
from analysis.instrument.heads import head_layouts, head_rows
from analysis.instrument.schedule import InstrumentConfig
from analysis.optim.roles import assign
from analysis.provenance import provenance

ROW_VECTOR_ROLES = ("output", "embedding")
MIN_MICRO_BATCHES = 4  # a recorded step's batch is cut into at least this many, where it can be


class Instrumentation:
    """A context manager that records the statistics of the module docstring for ``model``
    trained by ``optimizer`` into ``recorder`` (rows on rank 0; None records nothing).

    Args: ``config`` the schedule (``InstrumentConfig``), ``last_step`` the run's last step,
    ``data`` finite data for the probe and token counts (None: skipped), ``autocast`` the
    run's autocast, ``rank``/``world_size`` of this process, ``start_step`` a resume's step,
    ``rules`` a user's role rules (``analysis.optim.roles``; default: those the optimizer was
    built with by ``build_optimizer``, else the default rules)."""

    def __init__(
        self,
        model,
        optimizer,
        recorder,
        config: InstrumentConfig | None = None,
        last_step: int = 10**9,
        data=None,
        autocast=contextlib.nullcontext,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        rules=None,
    ):
        self.model, self.optimizer, self.recorder = model, optimizer, recorder
        self.config = config or InstrumentConfig()
        self.last_step, self.data, self.autocast = last_step, data, autocast
        self.rank, self.world_size = rank, world_size
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        layout = getattr(optimizer, "layout", None) if rules is None else None
        layout = layout or assign(model, rules)  # the optimizer's roles, or the same rules
        self.layout = layout
        self.roles = layout.roles()
        self.axis = {n: layout.params[n].fan_in for n, _ in self.params}
        self.heads = head_layouts(model, [n for n, _ in self.params]) if self.config.per_head else {}
        self.step = start_step + 1
        self.handles: list = []
        self._reset()
        self._prev_grad: dict[str, torch.Tensor] = {}
        self._probing = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self):
        if self.recorder is not None and self.rank == 0 and not self.recorder.has_config():
            self.recorder.write_config(self._own_loop_config())  # a user's loop, not the trainer
        for name, p in self.params:
            self.handles.append(p.register_hook(self._micro_hook(name)))
        self.handles.append(self.optimizer.register_step_pre_hook(self._pre_step))
        self.handles.append(self.optimizer.register_step_post_hook(self._post_step))
        if hasattr(self.optimizer, "register_tap_hook"):  # recipes built on ChainedOptimizer
            # taps only on recorded steps: a fused optimizer runs its fused path on the others
            self.handles.append(self.optimizer.register_tap_hook(self._tap, wanted=lambda: self.due))
        if self.data is not None and self.recorder is not None and self.step == 1:
            counts = np.bincount(self.data.train.ravel(), minlength=self.model.config.vocab_size)
            self.recorder.log_vector(0, "lm_head.weight", "output", "token_frequency", counts.tolist())
        return self

    def _own_loop_config(self) -> dict:
        """``config.json`` of a run recorded from a user's loop: the model, the optimizer,
        every parameter's role and fan-in axes, the schedule, and where the code came from."""
        return {
            "config": {
                "model": type(self.model).__name__,
                "optimizer": getattr(self.optimizer, "recipe", type(self.optimizer).__name__),
                "instrument": dataclasses.asdict(self.config),
            },
            "parameters": sum(p.numel() for _, p in self.params),
            "roles": {
                n: {"role": p.role, "fan_in": p.fan_in, "layer": p.layer, "shape": list(p.param.shape)}
                for n, p in self.layout.params.items()
            },
            "source": "own loop",
            **provenance(),
        }

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        return False

    def _reset(self):
        self.due = self.config.due("cheap", self.step, self.last_step)
        self._k, self._sequences, self._weight = 0, 0, 1.0
        self._sum_sq: dict[str, torch.Tensor] = {}
        self._row_sq: dict[str, torch.Tensor] = {}
        self._head_sq: dict[str, torch.Tensor] = {}  # o_proj-like matrices: per-head sums
        self._taps: dict[tuple[str, str], torch.Tensor] = {}
        self._snapshot: dict[str, torch.Tensor] = {}
        self._probe_rows: list = []

    def pieces(self, accum: int, micro: int) -> int:
        """Equal parts to cut each of this step's ``accum`` micro-batches of ``micro`` sequences
        into: 1 on an unrecorded step, else the fewest that make ``MIN_MICRO_BATCHES``
        micro-batches (a divisor of ``micro``; every sequence alone when ``micro`` is too small)."""
        if not self.due or accum >= MIN_MICRO_BATCHES:
            return 1
        fits = [p for p in range(1, micro + 1) if micro % p == 0 and accum * p >= MIN_MICRO_BATCHES]
        return fits[0] if fits else micro

    @staticmethod
    def variance_note(accum: int, micro: int, world_size: int) -> str | None:
        """Why a run with this batch records no gradient variance (None when it does)."""
        if accum * micro * world_size >= 2:
            return None
        return (
            "--instrument records no gradient variance in this run: a step has one sequence "
            "in all, and the variance across micro-batches needs at least 2 (raise --batch_size)"
        )

    def micro_batch(self, weight: float, sequences: int) -> None:
        """Announce the next backward: its loss weight and its number of sequences."""
        self._k += 1
        self._weight, self._sequences = weight, sequences

    # ------------------------------------------------------------------ hooks
    def _micro_hook(self, name):
        def hook(grad):
            if not self.due or self._probing:
                return None
            # ||grad / w||^2 = ||grad||^2 / w^2: no copy of the gradient per micro-batch
            inv_w2 = 1.0 / self._weight**2
            g = grad.detach()
            if self.axis[name] is not None:  # row sums only: the total is their sum, taken once per step
                rows = sqnorm(g, dim=self.axis[name])
                if name in self._row_sq:
                    self._row_sq[name].add_(rows, alpha=inv_w2)
                else:
                    self._row_sq[name] = rows.mul_(inv_w2)
            else:
                total = sqnorm(g) * inv_w2
                self._sum_sq[name] = self._sum_sq[name] + total if name in self._sum_sq else total
            heads = self.heads.get(name)
            if heads is not None and heads.axis == "columns":  # q/k/v heads come from the row sums
                per_head = heads.square_sums(g) * inv_w2
                self._head_sq[name] = self._head_sq[name] + per_head if name in self._head_sq else per_head
            return None

        return hook

    def _tap(self, label, tensor, param):
        if self.due and not self._probing:
            self._taps[(label, self._name_of(param))] = tensor

    def _name_of(self, param):
        if not hasattr(self, "_ids"):
            self._ids = {id(p): n for n, p in self.params}
        return self._ids.get(id(param))

    def _pre_step(self, optimizer, args, kwargs):
        if self.config.due("probe", self.step, self.last_step) and self.data is not None:
            self._probe_rows = self._probe()
        if self.due:
            self._snapshot = {n: p.detach().clone() for n, p in self.params}

    def _post_step(self, optimizer, args, kwargs):
        if self.due or self._probe_rows:
            rows = self._statistics() if self.due else []
            if self.recorder is not None and self.rank == 0:
                self._write(rows + self._probe_rows)
        self.step += 1
        self._reset()

    # ------------------------------------------------------------------ statistics
    def _lr_of(self):
        return {id(p): g["lr"] for g in self.optimizer.param_groups for p in g["params"]}

    def _reduced_micro_sums(self):
        """Micro-batch sums and K over all ranks (one all-reduce of a stacked vector)."""
        for name, rows in self._row_sq.items():  # a matrix's total: the sum of its row sums
            self._sum_sq[name] = rows.sum()
        names = [n for n, _ in self.params if n in self._sum_sq]
        k = self._k * self.world_size
        # totals, row sums and per-head sums, in this order, as one vector on every rank
        parts = (
            [(self._sum_sq, n) for n in names]
            + [(self._row_sq, n) for n in names if n in self._row_sq]
            + [(self._head_sq, n) for n in sorted(self._head_sq)]
        )
        if self.world_size > 1 and parts:
            flat = torch.cat([table[n].reshape(-1) for table, n in parts])
            torch.distributed.all_reduce(flat)
            offset = 0
            for table, n in parts:
                size = table[n].numel()
                table[n] = flat[offset : offset + size].reshape(table[n].shape)
                offset += size
        return k

    def _statistics(self):
        k = self._reduced_micro_sums()
        if self.rank != 0:
            return []
        cfg, step = self.config, self.step
        rows_due = cfg.due("rows", step, self.last_step)
        full_due = cfg.due("full", step, self.last_step)
        lrs = self._lr_of()
        out: list[tuple[str, str, str, torch.Tensor]] = []  # (param, role, stat, 0-d tensor)
        vectors: list[tuple[str, str, str, torch.Tensor]] = []
        summaries: list[tuple[str, str, str, torch.Tensor]] = []  # (param, role, prefix, rows)
        keep_next = cfg.due("cheap", step + 1, self.last_step)
        for name, p in self.params:
            if p.grad is None:
                continue
            role, axis = self.roles[name], self.axis[name]
            g = p.grad.detach()
            # a matrix's row sums, reduced once: its total, row RMS and row variance come from them
            g_rows = sqnorm(g, dim=axis) if axis is not None else None
            sqnorm_of_mean = g_rows.sum() if g_rows is not None else sqnorm(g)
            stats = {"grad_norm": sqnorm_of_mean.sqrt()}
            if name in self._sum_sq and k >= 2:
                var = microbatch_variance(self._sum_sq[name], sqnorm_of_mean, k)
                stats.update(
                    grad_var=var,
                    grad_var_rel=var / sqnorm_of_mean.clamp_min(1e-300),
                    grad_var_coord=var / g.numel(),
                )
                b = self._sequences
                gns = noise_scale(self._sum_sq[name] / k, b, sqnorm_of_mean, b * k)
                stats.update(gns)
                if rows_due and role in ROW_VECTOR_ROLES and name in self._row_sq:
                    row_var = microbatch_variance(self._row_sq[name], g_rows, k)
                    vectors.append((name, role, "grad_var_rows", row_var))
            if name in self._prev_grad:
                prev = self._prev_grad.pop(name)
                stats["grad_cos_prev"] = cosine(g, prev)
            if keep_next:
                self._prev_grad[name] = g.clone()
            old = self._snapshot.get(name)
            delta = p.detach() - old
            update = self._taps.get(("update", name))
            lr = lrs.get(id(p), 0.0)
            if update is None:
                update = -delta / lr if lr > 0 else delta
            weight_norm = norm64(old)
            stats["weight_norm"] = weight_norm
            u_rows = sqnorm(update, dim=axis) if axis is not None else None
            u_sq = u_rows.sum() if u_rows is not None else sqnorm(update)
            stats["update_rms"] = (u_sq / update.numel()).sqrt()
            stats["update_weight_ratio"] = norm64(delta) / weight_norm.clamp_min(1e-300)
            momentum = self._taps.get(("momentum", name))
            if momentum is None:
                state = self.optimizer.state.get(p, {})
                momentum = state.get("exp_avg", state.get("momentum_buffer"))
            if torch.is_tensor(momentum) and momentum.shape == g.shape:
                stats["momentum_grad_cos"] = cosine(momentum, g)
            if axis is not None:
                fan_in = g.numel() // g_rows.numel()
                grad_rows = spectra.row_rms(g_rows, fan_in)
                summaries += [
                    (name, role, "grad_row_rms", grad_rows),
                    (name, role, "update_row_rms", spectra.row_rms(u_rows, fan_in)),
                ]
                if rows_due and role in ROW_VECTOR_ROLES:
                    vectors.append((name, role, "grad_row_rms", grad_rows))
                if full_due or rows_due:
                    stats.update(self._spectral(name, role, update, full_due, vectors))
            if name in self.heads:
                out += self._per_head(name, role, g, g_rows, update, k, rows_due)
            out += [(name, role, stat, value) for stat, value in stats.items()]
        return self._to_host(out, vectors, summaries)

    def _per_head(self, name, role, g, g_rows, update, k, rows_due):
        """Per-head rows of an attention matrix (``analysis.instrument.heads``)."""
        layout, per = self.heads[name], {}
        if layout.axis == "rows":  # q/k/v: a head is a block of rows, so the row sums group
            g_head = layout.from_rows(g_rows).double().sum(1)
            micro = layout.from_rows(self._row_sq[name]).double().sum(1) if name in self._row_sq else None
            row_rms = layout.from_rows(spectra.row_rms(g_rows, g.numel() // g_rows.numel()))
            per["grad_row_rms_cv_head"] = row_rms.std(dim=1) / row_rms.mean(dim=1).clamp_min(1e-30)
        else:  # o: a head is a block of columns, summed per micro-batch
            g_head, micro = layout.square_sums(g), self._head_sq.get(name)
        if micro is not None and k >= 2:
            per["grad_var_head"] = microbatch_variance(micro, g_head, k)
        if rows_due:
            per["update_sigma_max_head"] = torch.linalg.matrix_norm(layout.blocks(update).float(), ord=2)
        return [
            (param, role, stat, value)
            for stat, values in per.items()
            for param, value in head_rows(name, values)
        ]

    def _spectral(self, name, role, update, full, vectors):
        u = update.reshape(update.size(0), -1)
        if full:
            s = spectra.singular_values(u, "svdvals", dtype=torch.float64)
            stats = spectra.spectral_stats(s, self.config.topk)
            keep = spectra.log_spaced(len(s))
            vectors.append((name, role, "update_spectrum", (s / s[0].clamp_min(1e-300))[keep]))
        else:
            s = spectra.singular_values(u, "topk", k=min(self.config.topk, min(u.shape)))
            stats = spectra.spectral_stats(s, self.config.topk, total_sq=sqnorm(u))
        return {f"update_{k}": v for k, v in stats.items()}

    def _to_host(self, scalars, vectors, summaries):
        """One device-to-host transfer for all scalars of this step, one for the row vectors
        that are summarized (``spectra.summarize``, on the host)."""
        rows = []
        if scalars:
            values = (
                torch.stack(
                    [
                        v if v.dtype == torch.float64 and v.ndim == 0 else v.double().reshape(())
                        for *_, v in scalars
                    ]
                )
                .cpu()
                .tolist()
            )
            rows = [(self.step, n, r, s, v) for (n, r, s, _), v in zip(scalars, values)]
        if summaries:
            flat = torch.cat([v.reshape(-1).float() for *_, v in summaries]).cpu().numpy()
            ends = np.cumsum([v.numel() for *_, v in summaries])
            for (n, r, prefix, _), part in zip(summaries, np.split(flat, ends[:-1])):
                rows += [(self.step, n, r, s, v) for s, v in spectra.summarize(part, prefix).items()]
        self._vectors = [(n, r, s, v.detach().double().cpu().tolist()) for n, r, s, v in vectors]
        return rows

    def _write(self, rows):
        self.recorder.log_rows(rows)
        for name, role, stat, values in getattr(self, "_vectors", []):
            self.recorder.log_vector(self.step, name, role, stat, values)
        self._vectors = []

    # ------------------------------------------------------------------ the paper's probe
    def _probe(self):
        """Estimator (b) on a separate data stream; ``.grad``, weights and RNG are untouched."""
        self._probing = True  # the probe's own backward passes are not micro-batches
        try:
            return paper_probe(
                self.model, self.params, self.roles, self.data, self.config, self.step, self.autocast
            )
        finally:
            self._probing = False
