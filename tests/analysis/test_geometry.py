import pytest
import torch

from analysis.optim import geometry


@pytest.mark.parametrize("shape", [(12, 7), (5, 20)])
def test_each_map_is_steepest_under_its_own_norm(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    table = geometry.efficiency_table(g)
    for norm in geometry.KINDS:
        assert table[norm][norm] == pytest.approx(1.0, abs=1e-9)
        assert all(v <= 1.0 + 1e-9 for v in table[norm].values())
        # no random direction on the unit ball beats the dual norm either
        dual = geometry.dual_norm(norm, g)
        for seed in range(20):
            u = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            u = u / geometry.norm(norm, u)
            assert (g * u).sum() <= dual + 1e-9


def test_newton_schulz_is_close_to_but_below_the_polar_factor():
    g = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    ns = geometry.steepest("spectral", g, newton_schulz=True)
    reached = float((g.double() * ns).sum() / geometry.dual_norm("spectral", g))
    assert 0.6 < reached < 1.0


def test_unknown_norm_names_the_choices():
    with pytest.raises(ValueError, match="choose one of sign, col_norm"):
        geometry.norm("frobenius", torch.ones(2, 2))
