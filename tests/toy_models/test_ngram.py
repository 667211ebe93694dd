import math

import numpy as np
import pytest

from toy_models.ngram import reference_losses


def test_a_cycle_is_predictable_from_one_token_but_not_from_frequencies():
    vocab = 16
    tokens = np.tile(np.arange(vocab), 2000)
    lines = reference_losses(tokens, tokens[:4096].reshape(-1, 64), vocab)
    assert lines["unigram"] == pytest.approx(math.log(vocab), abs=1e-3)
    assert lines["bigram"] < 0.01


def test_independent_tokens_gain_nothing_from_the_previous_one():
    vocab = 32
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, 200_000)
    held_out = rng.integers(0, vocab, (64, 64))
    lines = reference_losses(tokens, held_out, vocab)
    assert lines["unigram"] == pytest.approx(math.log(vocab), abs=0.01)
    # smoothing picked on held-out training text keeps the bigram from overfitting noise
    assert lines["bigram"] == pytest.approx(lines["unigram"], abs=0.01)


def test_scored_positions_are_those_of_the_validation_loss():
    """Block starts are not predicted: the first token of each block has no previous token."""
    vocab = 4
    tokens = np.tile(np.arange(vocab), 1000)
    blocks = np.array([[0, 1, 2, 3], [3, 0, 1, 2]])
    lines = reference_losses(tokens, blocks, vocab)
    unigram = np.log((np.bincount(tokens, minlength=vocab) + 1) / (len(tokens) + vocab))
    assert lines["unigram"] == pytest.approx(-np.mean(unigram[[1, 2, 3, 0, 1, 2]]))
