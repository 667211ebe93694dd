"""SCALE in one file (``analysis/optim/scale.py``): torch alone, equal to the recipe and to the
paper's rule, and usable in a loop that knows nothing else of the project."""

import ast
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis.optim.recipes import build_optimizer
from analysis.optim.scale import SCALE, scale_param_groups
from tests.analysis.test_recipes import LOSS_SCALE, _batch, _naive_scale

SOURCE = Path(__file__).resolve().parents[2] / "analysis" / "optim" / "scale.py"


def test_the_file_imports_torch_alone():
    tree = ast.parse(SOURCE.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"__future__", "math", "torch"}, imported


def _steps(model, opt, steps=10):
    for s in range(steps):
        x = _batch(s)
        (model(input_ids=x, labels=x).loss * LOSS_SCALE).backward()
        opt.step()
        opt.zero_grad()


def test_equal_to_the_recipe_and_to_the_paper_s_rule_in_float64(tiny_model):
    tiny_model.double()
    one_file, recipe = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    _steps(one_file, SCALE(scale_param_groups(one_file), lr=3e-3, adam_lr=2e-2))
    _steps(recipe, build_optimizer("scale", recipe, lr=3e-3, adam_lr=2e-2, fused=False))
    paper = _naive_scale(copy.deepcopy(tiny_model), 3e-3, 2e-2, 0.9, "published", 10, LOSS_SCALE)
    for (name, a), b, c in zip(one_file.named_parameters(), recipe.parameters(), paper.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(one_file.lm_head.weight, tiny_model.lm_head.weight)


def test_groups_follow_layer_types_and_refuse_what_they_cannot_know():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16, tie_word_embeddings=False)
    )
    roles = {(g["role"], g.get("fan_in")): len(g["params"]) for g in scale_param_groups(gpt2)}
    assert roles[("output", (1,))] == 1 and roles[("hidden", (0,))] == 4  # Conv1D: (in, out)
    assert roles[("embedding", (0,))] == 2  # tokens and positions
    tied = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(ValueError, match="tied"):
        scale_param_groups(tied)
    with pytest.raises(ValueError, match=r"no rule for 0.weight \(Bilinear"):
        scale_param_groups(nn.Sequential(nn.Bilinear(3, 3, 3), nn.Linear(3, 2)))


class TinyGPT(nn.Module):
    """A one-block causal transformer written here, with nothing from the project."""

    def __init__(self, vocab=64, width=32, context=16):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.attention = nn.MultiheadAttention(width, 4, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, x):
        t = x.size(1)
        h = self.tokens(x) + self.positions(torch.arange(t))
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        h = h + self.attention(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = h + self.mlp(h)
        return self.head(self.norm(h))


def test_a_tiny_gpt_written_here_trains_with_it():
    torch.manual_seed(0)
    model = TinyGPT()
    opt = SCALE(scale_param_groups(model, output=model.head), lr=3e-2, adam_lr=2e-2)
    data = torch.arange(16 * 33).remainder(64).view(33, 16)  # a pattern to learn: count mod 64
    losses = []
    for step in range(60):
        x = data[step % 32 : step % 32 + 1]
        logits = model(x[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 64), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses[::10]
    assert list(opt.state[model.head.weight]) == ["momentum_buffer"]  # the output layer's only
    assert not opt.state[model.mlp[1].weight]
