"""Reference lines for a loss curve: the corpus's unigram and bigram cross-entropy.

A language model first learns token frequencies (the unigram loss), then which token follows
which (the bigram loss), and only below that uses longer context. A final loss between the two
lines says the run is still learning token statistics, where the treatment of the embedding
and output layers dominates an optimizer comparison; a finding about optimizers needs losses
below the bigram line, or at least the line drawn beside them.

Both models are fitted on the training split and scored on exactly the positions a run's
validation loss scores (the first validation blocks up to the token budget, every token but
the first of each block):

- unigram: ``p(b) = (c(b) + 1) / (N + V)`` (add-one);
- bigram: ``p(b | a) = (c(a, b) + k p(b)) / (c(a) + k)`` (Dirichlet smoothing toward the
  unigram, MacKay & Peto 1995), with ``k`` picked from a fixed grid on the last 10% of the
  training split and the counts then refitted on all of it.

``python -m toy_models.ngram --model micro2k`` prints both for a model's bundled tokenizer.
"""

from __future__ import annotations

import argparse

import numpy as np

from toy_models.data import load_blocks, token_array
from toy_models.llama import model_tokenizer
from toy_models.tokenizer import load_tokenizer

DIRICHLET_GRID = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)


def _unigram(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    counts = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
    return (counts + 1.0) / (counts.sum() + vocab_size)


def _pair_codes(prev: np.ndarray, nxt: np.ndarray, vocab_size: int) -> np.ndarray:
    return prev.astype(np.int64) * vocab_size + nxt.astype(np.int64)


class _Bigram:
    """Sparse bigram counts (sorted pair codes) over a token stream."""

    def __init__(self, tokens: np.ndarray, vocab_size: int):
        self.vocab_size = vocab_size
        self.codes, self.counts = np.unique(
            _pair_codes(tokens[:-1], tokens[1:], vocab_size), return_counts=True
        )
        self.context = np.bincount(tokens[:-1], minlength=vocab_size).astype(np.float64)
        self.unigram = _unigram(tokens, vocab_size)

    def log_prob(self, prev: np.ndarray, nxt: np.ndarray, k: float) -> np.ndarray:
        codes = _pair_codes(prev, nxt, self.vocab_size)
        at = np.searchsorted(self.codes, codes).clip(max=len(self.codes) - 1)
        pair = np.where(self.codes[at] == codes, self.counts[at], 0).astype(np.float64)
        return np.log((pair + k * self.unigram[nxt]) / (self.context[prev] + k))


def reference_losses(
    train_tokens: np.ndarray, validation_blocks: np.ndarray, vocab_size: int
) -> dict[str, float]:
    """``{"unigram", "bigram", "bigram_k"}``: mean cross-entropy (nats per token) on the
    predicted positions of ``validation_blocks`` (``(n, seq_len)``), fitted on ``train_tokens``."""
    train_tokens = np.asarray(train_tokens)
    prev = validation_blocks[:, :-1].reshape(-1)
    nxt = validation_blocks[:, 1:].reshape(-1)
    split = int(0.9 * len(train_tokens))
    held_prev, held_next = train_tokens[split:-1], train_tokens[split + 1 :]
    fit = _Bigram(train_tokens[:split], vocab_size)
    k = max(DIRICHLET_GRID, key=lambda k: fit.log_prob(held_prev, held_next, k).mean())
    full = _Bigram(train_tokens, vocab_size)
    return {
        "unigram": float(-np.log(full.unigram[nxt]).mean()),
        "bigram": float(-full.log_prob(prev, nxt, k).mean()),
        "bigram_k": k,
    }


def for_run(tokenizer, seq_len: int, eval_tokens: int, source: str = "bundled") -> dict[str, float]:
    """The reference losses on the validation positions a run with these settings scores."""
    blocks = load_blocks(tokenizer, seq_len, source=source).validation
    n = min(len(blocks), max(1, eval_tokens // seq_len))
    return reference_losses(token_array(source, "train", tokenizer), blocks[:n], len(tokenizer))


def main(argv: list[str] | None = None) -> int:
    """``python -m toy_models.ngram``: print a model's unigram and bigram reference losses."""
    parser = argparse.ArgumentParser(description="Unigram and bigram cross-entropy of the bundled corpus.")
    parser.add_argument("--model", default="micro2k", help="picks the bundled tokenizer")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--eval_tokens", type=int, default=32_768)
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer(model_tokenizer(args.model))
    lines = for_run(tokenizer, args.seq_len, args.eval_tokens)
    print(
        f"unigram {lines['unigram']:.3f} nats, bigram {lines['bigram']:.3f} nats "
        f"(Dirichlet k = {lines['bigram_k']:g}; vocab {len(tokenizer)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
