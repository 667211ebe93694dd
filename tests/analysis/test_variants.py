"""RMNP, NorMuon and MuonEq (``analysis.optim.variants``) against naive transcriptions of
their papers' stated rules: three steps of a hidden matrix, same gradients, same weights."""

import math

import pytest
import torch

from analysis.optim.recipes import build_optimizer
from toy_models.llama import build_model, load_config

LR, BETA = 1e-2, 0.95
HIDDEN = "model.layers.0.mlp.up_proj.weight"  # (intermediate, hidden): taller than wide


def ns5(x, steps=5):
    """Muon's quintic Newton-Schulz, written out (arXiv 2510.05491 and 2603.28254 use it)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = x.size(0) > x.size(1)
    x = x.T if tall else x
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def rmnp(w, grads):
    m = torch.zeros_like(w)
    for g in grads:
        m = BETA * m + (1 - BETA) * g
        d = m / m.norm(dim=1, keepdim=True)
        w = w - LR * d
        yield w


def normuon(w, grads, eps=1e-8):
    m, v = torch.zeros_like(w), torch.zeros(w.size(0), 1)
    rows, cols = w.shape
    for g in grads:
        m = BETA * m + (1 - BETA) * g
        o = ns5(m)
        v = BETA * v + (1 - BETA) * (o * o).mean(dim=1, keepdim=True)
        o_hat = o / (v.sqrt() + eps)
        w = w - LR * 0.2 * math.sqrt(rows * cols) / o_hat.norm() * o_hat
        yield w


def muoneq(w, grads, eps=1e-8):
    buf = torch.zeros_like(w)
    for g in grads:
        buf = BETA * buf + g
        u = g + BETA * buf
        u = u / (u.square().sum(dim=1, keepdim=True) + eps).sqrt()
        w = w - LR * 0.2 * math.sqrt(max(w.shape)) * ns5(u)
        yield w


@pytest.mark.parametrize("name, transcription", [("rmnp", rmnp), ("normuon", normuon), ("muoneq", muoneq)])
def test_recipe_follows_its_papers_rule(name, transcription):
    model = build_model(load_config("nano", vocab_size=256), seed=0)
    params = dict(model.named_parameters())
    opt = build_optimizer(name, model, lr=LR)
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(params[HIDDEN].shape, generator=gen) * 1e-2 for _ in range(3)]
    expected = transcription(params[HIDDEN].detach().clone(), grads)
    for step, g in enumerate(grads):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        params[HIDDEN].grad = g.clone()
        opt.step()
        want = next(expected)
        torch.testing.assert_close(
            params[HIDDEN].detach(),
            want,
            rtol=0,
            atol=2e-6,
            msg=lambda m, step=step: f"{name} step {step}: {m}",
        )
    # the hidden matrices moved by the rule, the rest by AdamW
    assert (
        opt.transform_of(next(g for g in opt.param_groups if g["label"] == "output")).transforms[0].name
        == "adam"
    )
