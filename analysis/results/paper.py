"""The SCALE paper's own numbers (arXiv 2506.16659), in one place: tests, notebooks, the
report and the figures read them from here.

- ``MODEL_PARAMETERS``: total and output-layer (``lm_head``) parameters of its LLaMA configs;
- ``MEMORY_GB``: its memory table, ``GB = 2 bytes x (parameters + optimizer-state elements)
  / 1e9`` (bf16; gradients and activations not counted), per ``(recipe, model)``;
- ``PERPLEXITY``: final C4 validation perplexity per model and optimizer;
- ``ABLATION_PERPLEXITY``: its bottom-up normalization ablation (no momentum), and column
  normalization with last-layer momentum (= SCALE); plain SGD "does not train".

Recipe names are this toolkit's (``adamw`` for the paper's Adam, ``spectral_norm`` for
Newton-Schulz normalization, ``col_norm`` / ``row_norm`` for column- / row-wise).
"""

from __future__ import annotations

MODEL_PARAMETERS = {
    "60m": (58.07e6, 16.38e6),
    "130m": (134.1e6, 24.58e6),
    "350m": (368.0e6, 32.77e6),
    "1b": (1.339e9, 65.5e6),
    "7b": (6.738e9, 131.1e6),
}

MEMORY_GB = {
    ("sgd", "7b"): 13.476,
    ("scale", "7b"): 13.74,
    ("apollo_mini", "7b"): 14.53,
    ("apollo", "7b"): 16.14,
    ("muon", "7b"): 26.95,
    ("adamw", "7b"): 40.43,
    ("sgd", "1b"): 2.68,
    ("scale", "1b"): 2.81,
    ("apollo_mini", "1b"): 3.20,
    ("swan", "1b"): 3.20,
    ("galore", "1b"): 4.76,
    ("fira", "1b"): 4.76,
    ("apollo", "1b"): 4.76,
    ("muon", "1b"): 5.36,
    ("adamw", "1b"): 8.04,
    ("scale", "60m"): 0.15,
    ("scale", "130m"): 0.32,
    ("scale", "350m"): 0.80,
    ("adamw", "60m"): 0.35,
    ("adamw", "130m"): 0.81,
    ("adamw", "350m"): 2.21,
    ("muon", "60m"): 0.23,
    ("muon", "130m"): 0.54,
    ("muon", "350m"): 1.47,
}

PERPLEXITY = {
    "60m": {"adamw": 30.05, "muon": 28.86, "galore": 34.58, "apollo": 30.94, "scale": 30.81},
    "130m": {"adamw": 23.13, "muon": 22.20, "galore": 25.31, "apollo": 22.93, "scale": 22.57},
    "350m": {"adamw": 18.77, "muon": 16.70, "galore": 19.37, "apollo": 16.75, "scale": 16.32},
    "1b": {"adamw": 16.52, "muon": 14.18, "galore": 15.57, "apollo": 14.20, "scale": 14.25},
}

# The normalizations of its bottom-up ablation (no momentum), as recipe names.
NORMALIZATIONS = ("sign", "row_norm", "col_norm", "spectral_norm")

ABLATION_PERPLEXITY = {
    "60m": {"sign": 54.36, "row_norm": 79.27, "spectral_norm": 34.15, "col_norm": 39.89, "scale": 30.81},
    "130m": {"sign": 40.42, "row_norm": 37.67, "spectral_norm": 25.25, "col_norm": 28.85, "scale": 22.57},
    "350m": {"sign": 27.95, "row_norm": 21.63, "spectral_norm": 18.73, "col_norm": 20.38, "scale": 16.32},
}

# Its training runs: steps x 512 sequences x 256 tokens (warmup 10%, cosine to 10%).
TRAINING_STEPS = {"60m": 11_000, "130m": 20_000, "350m": 60_000, "1b": 100_000}
TOKENS_PER_STEP = 512 * 256


def paper_tokens_per_parameter() -> dict[str, float]:
    """Training tokens per parameter of the paper's runs (about 20-25)."""
    return {m: steps * TOKENS_PER_STEP / MODEL_PARAMETERS[m][0] for m, steps in TRAINING_STEPS.items()}
