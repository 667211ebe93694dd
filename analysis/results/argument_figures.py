"""Figures of the paper's argument (arXiv 2506.16659) that the ladder's figures do not draw:

=============================  ============================================================
``sgd_vs_normalized``          training loss of tuned SGD against the normalized rungs and
                               AdamW (the paper's Figure 2: plain SGD barely trains)
``momentum_placement``         final loss with momentum on no layer, the output layer
                               (SCALE), the embedding, or every layer, and the state each keeps
``output_entry_histogram``     the LM head's update entries after column (per output unit)
                               and row (per input feature) normalization: why row
                               normalization fails on the output layer
=============================  ============================================================

The lr sensitivity the paper shows is ``figures.lr_sweep`` (final loss against the peak lr of
every arm, from the tuning). Bands and error bars are Student-t 95% intervals over seeds, as
in the report (``analysis.results.stats``).
"""

from __future__ import annotations

import numpy as np

from analysis.optim.maths import rms_normalize
from analysis.recording import REFERENCE_LINES
from analysis.results import style
from analysis.results.run_set import MissingData, RunSet
from analysis.results.stats import summary, t_band
from toy_models.data import load_blocks
from toy_models.llama import build_model, load_config, model_tokenizer
from toy_models.tokenizer import load_tokenizer

PLACEMENT_LABELS = {
    "col_norm": "none",
    "scale": "output layer (SCALE)",
    "col_norm+embedding": "embedding",
    "col_norm+all": "every layer",
}
SGD_FIGURE_ARMS = ("sgd", "sign", "col_norm", "scale", "adamw")


def sgd_vs_normalized(rec: RunSet):
    """Training loss (10-step running mean; mean over seeds with a t-interval band) of SGD, sign,
    column normalization, SCALE and AdamW, each at its tuned lr."""
    import seaborn as sns

    train = rec.stat("loss", per_param=False).copy()
    arms = [a for a in SGD_FIGURE_ARMS if a in set(train["label"])]
    if "sgd" not in arms or len(arms) < 2:
        raise MissingData(f"needs the sgd arm and a normalized one; recorded: {sorted(set(train['label']))}")
    train = train[train["label"].isin(arms)]
    train["smoothed"] = train.groupby("run")["value"].transform(lambda v: v.rolling(10, 1).mean())
    fig, (ax,) = style.figure(width=6.5, height=4.0)
    sns.lineplot(
        train,
        x="step",
        y="smoothed",
        hue="label",
        hue_order=arms,
        palette=style.palette(arms),
        errorbar=t_band,
        ax=ax,
    )
    style.reference_lines(ax, rec.side_file(REFERENCE_LINES))
    ax.set(
        xlabel="optimizer step",
        ylabel="train loss (10-step mean)",
        title="Tuned SGD against normalized updates",
    )
    ax.legend(fontsize=7, ncols=2)
    return fig


def momentum_placement(rec: RunSet):
    """Final validation loss (mean and t-interval over seeds) of column normalization with
    momentum on no layer, the output layer, the embedding, or every layer; each row names the
    optimizer state it keeps."""
    table = summary(rec.results)
    missing = [arm for arm in PLACEMENT_LABELS if arm not in table.index]
    if missing:
        raise MissingData(f"momentum placement needs the arms {missing}; run `scale-lab reproduce`")
    rows = table.loc[list(PLACEMENT_LABELS)]
    fig, (ax,) = style.figure(width=6.5, height=3.2)
    err = np.where(np.isfinite(rows["loss_ci"]), rows["loss_ci"], 0.0)
    colours = style.palette(list(PLACEMENT_LABELS))
    for i, (arm, row) in enumerate(rows.iterrows()):
        ax.errorbar(row["loss"], i, xerr=err[i], fmt="o", color=colours[arm], capsize=4, ms=7)
    ax.set_yticks(
        range(len(rows)),
        [f"{PLACEMENT_LABELS[arm]}\n{row['state_mb']:.1f} MB state" for arm, row in rows.iterrows()],
    )
    ax.invert_yaxis()
    ax.set(
        xlabel="final validation loss (nats; mean, 95% t-interval)",
        ylabel="momentum on",
        title=f"Where momentum goes ({int(rows['seeds'].min())} seeds per arm)",
    )
    return fig


def output_gradient(model_name: str = "micro2k", batch_size: int = 16, seq_len: int = 128, seed: int = 0):
    """The LM head's gradient ``(vocab, hidden)`` at initialization on one batch of the bundled
    corpus, and each vocabulary row's token count in that batch."""
    tokenizer = load_tokenizer(model_tokenizer(model_name))
    model = build_model(load_config(model_name, vocab_size=len(tokenizer)), seed=seed)
    batch = load_blocks(tokenizer, seq_len).train_batch(0, batch_size)
    model(input_ids=batch, labels=batch).loss.backward()
    counts = np.bincount(batch.reshape(-1).numpy(), minlength=model.config.vocab_size)
    return model.lm_head.weight.grad.detach(), counts


def output_entry_histogram(rec: RunSet | None = None, model_name: str = "micro2k"):
    """Histograms of ``log10 |U_ij|`` for the LM head's normalized gradient: per output unit
    (column normalization, SCALE's) and per input feature (row normalization), entries of the
    batch's tokens and of tokens absent from it drawn apart."""
    grad, counts = output_gradient(model_name)
    seen = counts > 0
    fig, axes = style.figure(2, width=4.6, height=3.6)
    for ax, (title, axis) in zip(
        axes, (("column normalization (per output unit)", 1), ("row normalization (per input feature)", 0))
    ):
        entries = np.log10(rms_normalize(grad.double(), dim=axis).abs().clamp_min(1e-30).numpy())
        bins = np.linspace(-8, 2, 60)
        ax.hist(
            entries[seen].ravel(),
            bins=bins,
            color="#d62728",
            alpha=0.7,
            label=f"tokens in the batch ({seen.sum()})",
        )
        ax.hist(
            entries[~seen].ravel(),
            bins=bins,
            color="#7f7f7f",
            alpha=0.6,
            label=f"tokens not in it ({(~seen).sum()})",
        )
        ax.set(yscale="log", xlabel="log10 |entry| of the normalized update", ylabel="entries", title=title)
        ax.legend(fontsize=7, loc="upper left")
    return fig
