import numpy as np
import pytest
import torch

from analysis.instrument import spectra
from analysis.instrument.estimators import sqnorm


@pytest.mark.parametrize("shape", [(20, 7), (7, 20), (16, 16)])
@pytest.mark.parametrize("method", ["svdvals", "gram"])
def test_singular_values_match_numpy_float64(shape, method):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = spectra.singular_values(x, method, dtype=torch.float64)
    np.testing.assert_allclose(s.numpy(), np.linalg.svd(x.numpy(), compute_uv=False), rtol=1e-9, atol=1e-9)


def test_topk_matches_leading_values():
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x @ torch.diag(torch.logspace(0, -3, 32, dtype=torch.float64))
    top = spectra.singular_values(x, "topk", k=4, dtype=torch.float64)
    np.testing.assert_allclose(top.numpy(), np.linalg.svd(x.numpy(), compute_uv=False)[:4], rtol=1e-3)


def test_ranks_of_known_matrices_are_exact():
    s_identity = spectra.singular_values(torch.eye(12, dtype=torch.float64), dtype=torch.float64)
    assert spectra.stable_rank(s_identity).item() == pytest.approx(12, abs=1e-12)
    assert spectra.effective_rank(s_identity).item() == pytest.approx(12, abs=1e-9)
    u = torch.arange(1.0, 9.0, dtype=torch.float64)
    s_rank1 = spectra.singular_values(torch.outer(u, u), dtype=torch.float64)
    s_rank1 = torch.where(s_rank1 < 1e-10 * s_rank1[0], torch.zeros_like(s_rank1), s_rank1)
    assert spectra.stable_rank(s_rank1).item() == pytest.approx(1, abs=1e-12)
    assert spectra.effective_rank(s_rank1).item() == pytest.approx(1, abs=1e-12)
    assert spectra.topk_energy(s_rank1, 1).item() == pytest.approx(1, abs=1e-12)


def test_row_summaries():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]])
    rms = spectra.row_rms(sqnorm(x, dim=1), x.size(1))
    torch.testing.assert_close(rms, torch.tensor([12.5**0.5, 0.0, 1.0]))
    stats = spectra.summarize(rms, "r")
    assert stats["r_min"] == 0 and stats["r_max"] == pytest.approx(12.5**0.5)
    assert stats["r_cv"] == pytest.approx((rms.std(unbiased=False) / rms.mean()).item())


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_summary_quantiles_match_torch_quantile(n):
    # the one-sort quantiles are torch.quantile's (linear interpolation)
    v = torch.rand(n, generator=torch.Generator().manual_seed(n))
    stats = spectra.summarize(v.numpy(), "v")
    want = torch.quantile(v.double(), torch.tensor(spectra.QUANTILES, dtype=torch.float64))
    got = torch.tensor([stats[f"v_q{int(q * 100):02d}"] for q in spectra.QUANTILES], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert stats["v_min"] == v.min().item() and stats["v_max"] == v.max().item()
    assert stats["v_mean"] == pytest.approx(v.double().mean().item(), rel=1e-12)
    assert stats["v_std"] == pytest.approx(v.double().std(unbiased=False).item(), rel=1e-12, abs=1e-15)
