"""One caption per figure of ``analysis.results.figures``: what a reader should look at.

``report.md`` shows each under a link to its figure; a test checks that every figure in
``figures.REGISTRY`` has one.
"""

CAPTIONS = {
    "grad_variance_by_layer": "Which layer's gradient is noisiest: SCALE's single momentum buffer "
    "belongs where this variance is largest (bands: 95% t-intervals over "
    "seeds, drawn down to a tenth of the mean on the log axis).",
    "grad_variance_with_momentum": "The same variance by role with momentum on the output layer "
    "(the paper's Figure 4b): compare each role with the figure above.",
    "loss_curves": "Every arm's training and validation loss; dotted: the unigram loss, dashed: the "
    "bigram loss, what counting tokens and token pairs alone reaches.",
    "lr_sweep": "Final loss against peak learning rate for every arm: a chosen lr at a grid's edge "
    "would mean an under-tuned arm.",
    "normalization_ablation": "Final validation loss per arm with 95% intervals over seeds, dots on "
    "an axis near the losses; lower is better, overlapping intervals are not a ranking.",
    "column_norm_stats": "Left: how unequal the per-unit update sizes are per role (0 when each unit "
    "is normalized); right: output rows of rare tokens against frequent ones.",
    "update_spectra": "How flat each arm's update spectrum is (left) and the hidden updates' stable "
    "rank over training (right).",
    "memory_vs_perplexity": "Optimizer state against perplexity, these runs (measured) and the paper "
    "at 1B (its accounting): the lower left corner is better on both.",
    "momentum_quadratic": "SGD against EMA momentum on a noisy quadratic at the same lr; dotted: "
    "the exact noise floors, in the legend.",
    "sgd_vs_normalized": "Plain SGD at its best lr against the normalized rungs and AdamW (the "
    "paper's Figure 2): how far each gets below the unigram line.",
    "momentum_placement": "One momentum buffer, placed: on the output layer (SCALE) against none, the "
    "embedding, or every layer, with the state each keeps.",
    "output_entry_histogram": "The LM head's normalized update at init: per output unit every token's "
    "row has unit RMS; per input feature a row's size follows its token's "
    "presence in the batch (absent tokens' rows several times smaller).",
}
