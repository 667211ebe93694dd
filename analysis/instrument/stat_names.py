"""What every statistic name in a recording means: the one place the recordings' names are
documented. The names are a data format (shipped recordings and users' runs hold them), so
they stay as they are; this module says what each one measures.

The vocabulary (code, docstrings and figures use it): a matrix's *unit* is one output unit, and
its *fan-in* the entries that feed it: a row of a torch ``Linear`` weight (``(out, in)``), a
column of the embedding (``(vocab, hidden)``: fan-in on dim 0), as ``analysis.optim.roles``
assigns them. SCALE's column normalization (the paper's "column-wise", arXiv 2506.16659) scales
each unit's fan-in to unit RMS; ``row_norm`` scales the other axis, each *input feature*. A
"row" in a statistic's name is always one unit's fan-in, whichever torch axis holds it.

Rows of ``metrics.jsonl`` are ``{step, param, role, stat, value}``: run-level statistics have
``param`` null (``RUN``), per-matrix ones name the parameter (``PER_PARAMETER``; per head:
``"<matrix>/head<h>"``); ``spectra.jsonl`` holds vectors (``VECTORS``). ``ROW_SUMMARY`` names
the suffixes of a vector summarized per step (``analysis.instrument.spectra.summarize``).
"""

from __future__ import annotations

RUN = {
    "loss": "training loss of the step (token mean over the step's batch)",
    "grad_norm": "global gradient norm of the step, before clipping",
    "grad_clipped": "1 when the step's gradient was clipped (--grad_clip), else 0",
    "lr": "learning rate of the matrices at the step (``lr/<group>``: each parameter group's)",
    "eval_loss": "validation loss (token mean over the held-out tokens)",
    "eval_perplexity": "exp(eval_loss)",
    "tokens_per_s": "training throughput over the last interval",
    "step_time": "seconds per optimizer step over the last interval",
    "data_time": "seconds per step spent waiting for batches",
    "tokens": "training tokens seen up to the step",
    "flops_per_s": "model FLOPs per second (6 N tokens/s plus attention)",
    "cpu_peak_fraction": "flops_per_s over this CPU's measured matmul peak",
    "memory_allocated_peak_gb": "peak CUDA memory allocated (GB)",
    "memory_reserved_peak_gb": "peak CUDA memory reserved (GB)",
}

PER_PARAMETER = {
    "grad_norm": "||g||, the step's (synchronized) gradient of the matrix",
    "grad_var": "estimator (a): E||g_k - g||^2 across the step's micro-batches, unbiased",
    "grad_var_rel": "grad_var / ||g||^2",
    "grad_var_coord": "grad_var per entry (grad_var / elements)",
    "gns_sqnorm": "estimator (c): unbiased |G|^2 of the true gradient (McCandlish et al. 2018)",
    "gns_trace": "estimator (c): per-sequence trace of the gradient covariance",
    "probe_var": "estimator (b), the paper's probe: small batches against one large batch",
    "probe_var_rel": "probe_var / ||g_large||^2",
    "probe_trace": "probe_var / (1/b + 1/B): the per-sequence trace",
    "probe_gns_sqnorm": "estimator (c) from the probe's two batch sizes",
    "probe_gns_trace": "estimator (c)'s trace from the probe's two batch sizes",
    "grad_row_rms": "one gradient RMS per unit (its fan-in); summarized with ROW_SUMMARY",
    "update_row_rms": "one update RMS per unit; summarized with ROW_SUMMARY (0 spread: normalized)",
    "update_rms": "RMS of the update u (p <- p - lr u)",
    "update_weight_ratio": "||lr u|| / ||W||, the realized step against the weights",
    "weight_norm": "||W|| before the step",
    "grad_cos_prev": "cosine of the gradient with the previous recorded step's",
    "momentum_grad_cos": "cosine of the momentum buffer with the gradient (momentum placed)",
    "update_sigma_max": "largest singular value of the update",
    "update_stable_rank": "||U||_F^2 / ||U||_2^2 of the update",
    "update_effective_rank": "exp(entropy of the normalized singular values) (full spectra only)",
    "update_topk_energy": "share of ||U||_F^2 in the top-k singular values",
    "grad_var_head": "grad_var of one attention head's block",
    "grad_row_rms_cv_head": "spread (cv) of the unit RMS inside one head (q/k/v)",
    "update_sigma_max_head": "largest singular value of one head's update block",
}

ROW_SUMMARY = ("min", "max", "mean", "std", "cv", "q05", "q50", "q95")

VECTORS = {
    "update_spectrum": "singular values of the update over the largest, s_i / s_1 (log-spaced subset)",
    "grad_var_rows": "grad_var per unit (output layer and embedding)",
    "grad_row_rms": "gradient RMS per unit (output layer and embedding)",
    "token_frequency": "token counts of the training split (the output layer's units are tokens)",
}


def meaning(stat: str) -> str | None:
    """What ``stat`` (a scalar row's name, with any ``ROW_SUMMARY`` suffix, or a vector's)
    measures; None for a name this format does not define."""
    if stat.startswith("lr/"):
        return f"learning rate of parameter group {stat[3:]!r} at the step"
    for table in (RUN, PER_PARAMETER, VECTORS):
        if stat in table:
            return table[stat]
    base, _, suffix = stat.rpartition("_")
    if suffix in ROW_SUMMARY and base in PER_PARAMETER:
        return f"{suffix} over units of: {PER_PARAMETER[base]}"
    return None
