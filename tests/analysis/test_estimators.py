import numpy as np
import pytest
import torch

from analysis.instrument.estimators import (
    microbatch_variance,
    noise_scale,
    per_example_grads,
    probe_variance,
    sqnorm,
)

pytestmark = pytest.mark.xdist_group("test_estimators")  # its module fixture is built once, on one worker


@pytest.fixture(scope="module")
def population():
    """Exact per-sequence gradients of the output layer of a tiny LLaMA: a finite population."""
    from toy_models.llama import build_model, load_config

    config = load_config(
        "nano",
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = build_model(config, seed=0)
    x = torch.randint(0, 64, (48, 12), generator=torch.Generator().manual_seed(0))
    grads = per_example_grads(model, x)["lm_head.weight"].double().flatten(1)
    mean = grads.mean(0)
    trace = (grads - mean).square().sum(1).mean()  # population tr(Sigma), sampling with replacement
    return grads, mean, trace


def test_per_example_grads_match_backward(tiny_model):
    x = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    grads = per_example_grads(tiny_model, x)
    tiny_model(input_ids=x[2:3], labels=x[2:3]).loss.backward()
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(grads[name][2], p.grad, rtol=1e-5, atol=1e-7)


def test_microbatch_variance_is_the_sample_variance(population):
    grads, _, _ = population
    micro = grads[:24].view(4, 6, -1).mean(1)  # K=4 micro-batches of b=6
    g_bar = micro.mean(0)
    by_hand = (micro - g_bar).square().sum(1).sum() / 3
    est = microbatch_variance(micro.square().sum(), g_bar.square().sum(), 4)
    assert est.item() == pytest.approx(by_hand.item(), rel=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        microbatch_variance(torch.tensor(1.0), torch.tensor(1.0), 1)


def _trials(population, n_trials, fn):
    grads, _, _ = population
    rng = np.random.default_rng(0)
    return np.array([fn(grads, rng) for _ in range(n_trials)])


def _assert_unbiased(samples, truth):
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - truth) < 4 * se, (samples.mean(), truth, se)


def test_probe_estimator_is_unbiased(population):
    grads, _, trace = population
    b, big = 4, 16

    def probe(g, rng):
        large = g[rng.integers(0, len(g), big)].mean(0)
        smalls = [g[rng.integers(0, len(g), b)].mean(0) for _ in range(4)]
        return (probe_variance(smalls, large) / (1 / b + 1 / big)).item()

    _assert_unbiased(_trials(population, 600, probe), trace.item())


def test_two_batch_noise_scale_is_unbiased(population):
    grads, mean, trace = population
    b, big = 3, 12

    def both(g, rng):
        small = g[rng.integers(0, len(g), b)].mean(0)
        large = g[rng.integers(0, len(g), big)].mean(0)
        est = noise_scale(sqnorm(small), b, sqnorm(large), big)
        return est["gns_trace"].item(), est["gns_sqnorm"].item()

    samples = _trials(population, 800, both)
    _assert_unbiased(samples[:, 0], trace.item())
    _assert_unbiased(samples[:, 1], mean.square().sum().item())


@pytest.mark.parametrize(
    "shape, dim",
    [((300, 1376), None), ((300, 1376), 1), ((3000, 64), 0), ((4, 3, 5, 5), (1, 2, 3)), ((513,), None)],
)
def test_sqnorm_matches_float64_sums(shape, dim):
    # float32 partial sums per row, float64 totals: within 1e-6 of summing every square in float64
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1e-3 + 1e-3
    exact = x.double().square().sum() if dim is None else x.double().square().sum(dim)
    got = sqnorm(x, dim)
    assert got.dtype == torch.float64 and got.shape == exact.shape
    torch.testing.assert_close(got, exact, rtol=1e-6, atol=0.0)
