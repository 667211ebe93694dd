"""SWAN and Stable-SPAM against their papers' rules, written out naively here."""

import copy

import torch

from analysis.optim.baselines import adam_with_reset, norm_scale, spike_clip, standardize
from analysis.optim.recipes import build_optimizer
from analysis.optim.roles import assign_roles


def test_gradnorm_gives_zero_mean_unit_std_per_output_unit():
    g = torch.randn(6, 40, dtype=torch.float64) * torch.arange(1, 7, dtype=torch.float64)[:, None] + 3
    u = standardize(1).update(g, {}, g)
    torch.testing.assert_close(u.mean(1), torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(u.std(1, unbiased=False), torch.ones(6, dtype=torch.float64))


def test_swan_whitening_keeps_the_singular_vectors_of_the_normalized_gradient(tiny_model):
    """(G G^T)^{-1/2} G = U V^T: the update is diagonal in G~'s singular bases (Newton-Schulz
    only bends the singular values, which land in a band around 1)."""
    gen = torch.Generator().manual_seed(0)
    for p in tiny_model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    hidden = tiny_model.model.layers[0].mlp.up_proj.weight  # 32 x 16
    before = hidden.detach().clone()
    build_optimizer("swan", tiny_model, lr=1.0).step()
    update = (before - hidden.detach()).double()
    g = hidden.grad.double()
    gn = (g - g.mean(1, keepdim=True)) / g.std(1, unbiased=False, keepdim=True)
    left, sv, right_t = torch.linalg.svd(gn, full_matrices=False)
    core = left.T @ update @ right_t.T
    diagonal = torch.diagonal(core)
    assert (core - torch.diag(diagonal)).abs().max() < 1e-2 * diagonal.abs().max()
    scale = max(hidden.shape) ** 0.5  # unit RMS rescale of the polar factor
    # centring each row over the fan-in removes the all-ones direction: G~ has rank n - 1 and
    # whitening (a pseudo-inverse square root) leaves that direction at 0
    live = sv > 1e-8 * sv.max()
    assert live.sum() == min(hidden.shape) - 1 and diagonal[~live].abs().max() < 1e-3
    assert ((diagonal[live] / scale > 0.5) & (diagonal[live] / scale < 1.5)).all()


def _naive_stable_spam(grads, lr, g1, g2, g3, b1, b2, eps, every):
    """The rules of Stable-SPAM (arXiv 2502.17055, section 4) for one tensor, plainly."""
    p = torch.zeros_like(grads[0], dtype=torch.float64)
    m_max = m_n = v_n = 0.0
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    k = 0
    for t, g in enumerate(grads, start=1):
        g = g.double()
        peak = g.abs().max().item()
        m_max = g3 * m_max + (1 - g3) * peak
        bound = m_max / (1 - g3**t)
        g = torch.where(g.abs() > bound, g / peak * bound, g)
        norm = g.norm().item()
        m_n = g1 * m_n + (1 - g1) * norm
        v_n = g2 * v_n + (1 - g2) * norm**2
        g = g / norm * (m_n / (1 - g1**t)) / (v_n / (1 - g2**t)) ** 0.5
        if t > 1 and (t - 1) % every == 0:
            m, v, k = torch.zeros_like(p), torch.zeros_like(p), 0
        k += 1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + eps)
    return p


def test_stable_spam_matches_its_rules_through_a_spike_and_a_reset():
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(5, 7, generator=gen, dtype=torch.float64) for _ in range(10)]
    grads[6][2, 3] = 500.0  # a spike for the clipping to catch
    param = torch.nn.Parameter(torch.zeros(5, 7, dtype=torch.float64))
    from analysis.optim.optimizer import ChainedOptimizer
    from analysis.optim.transforms import chain

    rule = chain(spike_clip(0.999), norm_scale(0.7, 0.9), adam_with_reset((0.9, 0.999), 1e-8, every=4))
    opt = ChainedOptimizer([{"params": [param], "label": "all", "lr": 1e-2}], {"all": rule})
    for g in grads:
        param.grad = g.clone()
        opt.step()
    expected = _naive_stable_spam(grads, 1e-2, 0.7, 0.9, 0.999, 0.9, 0.999, 1e-8, every=4)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-6, atol=1e-9)


def test_stable_spam_recipe_covers_every_parameter_and_round_trips(tiny_model):
    opt = build_optimizer("stable_spam", tiny_model)
    assert {g["label"] for g in opt.param_groups} == set(assign_roles(tiny_model).values())
    x = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    tiny_model(input_ids=x, labels=x).loss.backward()
    opt.step()
    twin = copy.deepcopy(tiny_model)
    twin_opt = build_optimizer("stable_spam", twin)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for model, optimizer in ((tiny_model, opt), (twin, twin_opt)):
        optimizer.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
    for a, b in zip(tiny_model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
