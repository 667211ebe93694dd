import numpy as np
import pytest

from toy_models import quadratic


def test_sgd_floor_matches_the_closed_form():
    lr, sigma = 0.5, 0.7
    h = quadratic.curvatures()
    closed = float(np.sum(lr * sigma**2 * h / (4 * (1 - lr * h / 2))))
    assert quadratic.ema_floor(lr, 0.0, sigma) == pytest.approx(closed, rel=1e-9)


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_simulation_reaches_the_exact_floor(beta):
    losses = quadratic.run(steps=1500, lr=1.0, beta=beta, sigma=0.3, repeats=256, seed=1)
    assert losses[-500:].mean() == pytest.approx(quadratic.ema_floor(1.0, beta, 0.3), rel=0.08)


def test_momentum_lowers_the_floor_and_extends_stability():
    assert quadratic.ema_floor(1.0, 0.9, 0.3) < quadratic.ema_floor(1.0, 0.0, 0.3)
    assert quadratic.ema_floor(2.5, 0.0) == float("inf")  # SGD unstable past lr h = 2
    assert np.isfinite(quadratic.ema_floor(2.5, 0.9))  # EMA momentum still stable
