"""Roles and fan-in axes on models other than the project's LLaMA: tiny configs of
HF families built locally (no download), a plain MLP and a small CNN.

The check is the paper's rule itself (arXiv 2506.16659): after one ``scale`` step every
matrix's update has unit RMS per output unit. The output unit of each layer type is written
out here, independently of ``analysis.optim.roles``: an ``nn.Linear`` row, a ``Conv1D``
column (it stores ``(in, out)``), a convolution's output channel, an embedding's model
dimension (a column of ``(vocab, d)``)."""

import pytest
import torch
from torch import nn

from analysis.optim.recipes import build_optimizer
from analysis.optim.roles import RoleError, assign, by_name, by_type, tied

# reduce over these axes to get one value per output unit, by layer type (the test's truth)
PER_OUTPUT_UNIT = {"Linear": (1,), "Embedding": (0,), "Conv1D": (0,), "Conv2d": (1, 2, 3)}


def _hf(family: str, tie: bool = False):
    import transformers as tf

    small = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    if family == "gpt2":
        return tf.GPT2LMHeadModel(
            tf.GPT2Config(
                n_layer=2, n_embd=32, n_head=4, vocab_size=96, n_positions=64, tie_word_embeddings=tie
            )
        )
    if family == "gpt_neox":
        small.pop("num_key_value_heads")
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**small))
    config = {
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "mistral": tf.MistralConfig,
        "gemma": tf.GemmaConfig,
    }[family]
    extra = {"head_dim": 8} if family in ("qwen3", "gemma") else {}
    model_class = {
        "qwen2": tf.Qwen2ForCausalLM,
        "qwen3": tf.Qwen3ForCausalLM,
        "mistral": tf.MistralForCausalLM,
        "gemma": tf.GemmaForCausalLM,
    }[family]
    return model_class(config(**small, **extra))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 24), nn.GELU())
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        return self.head(self.body(x))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, stride=2)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(6 * 3 * 3, 4)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.norm(self.conv1(x)))))
        return self.head(x.flatten(1))


def _loss(model, kind: str):
    g = torch.Generator().manual_seed(0)
    if kind == "lm":
        ids = torch.randint(0, 96, (2, 16), generator=g)
        return model(input_ids=ids, labels=ids).loss
    if kind == "mlp":
        return model(torch.randn(8, 12, generator=g, dtype=torch.float64)).logsumexp(1).mean()
    return model(torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)).logsumexp(1).mean()


CASES = {  # name: (build, loss kind, rules)
    "gpt2": (lambda: _hf("gpt2"), "lm", None),
    "gpt_neox": (lambda: _hf("gpt_neox"), "lm", None),
    "qwen2": (lambda: _hf("qwen2"), "lm", None),
    "qwen3": (lambda: _hf("qwen3"), "lm", None),
    "mistral": (lambda: _hf("mistral"), "lm", None),
    "gemma_tied": (lambda: _hf("gemma", tie=True), "lm", [tied("output")]),
    "mlp": (MLP, "mlp", [by_name("output", "head.weight")]),
    "cnn": (CNN, "cnn", [by_name("output", "head.weight")]),
}


def _modules_of(model):
    owner = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owner.setdefault(id(p), module)
    return owner


@pytest.mark.parametrize("case", list(CASES))
def test_one_scale_step_gives_unit_rms_per_output_unit(case):
    build, kind, rules = CASES[case]
    torch.manual_seed(0)
    model = build().double()
    opt = build_optimizer("scale", model, rules=rules, lr=1e-2, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _loss(model, kind).backward()
    opt.step()
    owner = _modules_of(model)
    layout = opt.layout
    checked = set()
    for name, p in model.named_parameters():
        if p.ndim < 2 or p.grad is None:
            continue
        layer = type(owner[id(p)]).__name__
        if layout.params[name].role == "output":
            layer = "Linear"  # a tied head is used as a Linear (vocab, d)
        update = (before[name] - p.detach()) / 1e-2
        rms = update.square().mean(dim=PER_OUTPUT_UNIT[layer]).sqrt()
        assert torch.allclose(rms, torch.ones_like(rms), atol=1e-6), (name, layer, rms.min(), rms.max())
        checked.add(layer)
    assert "Linear" in checked or "Conv1D" in checked
    table = opt.describe()
    assert all(n in table for n in layout.params)  # the roles table, one line per parameter


def test_gpt2_conv1d_is_normalized_per_output_unit_not_per_input_feature():
    """The issue's silent bug: Conv1D's update per output unit, computed over the wrong axis
    would range widely; here it is 1 everywhere and the roles table names Conv1D's axis 0."""
    model = _hf("gpt2").double()
    opt = build_optimizer("scale", model, lr=1e-2, weight_decay=0.0)
    layout = opt.layout.params["transformer.h.0.mlp.c_fc.weight"]
    assert (layout.layer, layout.role, layout.fan_in) == ("Conv1D", "hidden", (0,))
    line = next(r for r in opt.describe().splitlines() if r.startswith("transformer.h.0.mlp.c_fc.weight"))
    assert "Conv1D" in line and " hidden " in line and " 0 " in line


def test_tied_weights_are_refused_by_default_and_an_explicit_choice_is_kept():
    model = _hf("gemma", tie=True)
    with pytest.raises(RoleError, match=r"tied weights.*rules=\[tied\('output'\)\]"):
        build_optimizer("scale", model)
    embedding = assign(model, [tied("embedding")]).params["model.embed_tokens.weight"]
    output = assign(model, [tied("output")]).params["model.embed_tokens.weight"]
    assert (embedding.role, embedding.fan_in) == ("embedding", (0,))
    assert (output.role, output.fan_in) == ("output", (1,))


def test_a_model_without_an_output_head_needs_it_named_for_scale():
    with pytest.raises(Exception, match=r"no parameter of MLP has the role 'output'.*by_name"):
        build_optimizer("scale", MLP())
    assert build_optimizer("col_norm", MLP()).layout.params["head.weight"].role == "hidden"


def test_an_unknown_layer_is_refused_until_a_rule_gives_its_fan_in():
    model = nn.Sequential(nn.MultiheadAttention(8, 2))
    with pytest.raises(
        RoleError,
        match=r"0.in_proj_weight \(24, 8\) of a MultiheadAttention "
        r"matches no role rule.*by_type\('hidden', "
        r"MultiheadAttention, fan_in=1\)",
    ):
        assign(model)
    layout = assign(model, [by_type("hidden", nn.MultiheadAttention, fan_in=1)])
    assert layout.params["0.in_proj_weight"].fan_in == (1,)
    assert layout.params["0.out_proj.weight"].fan_in == (1,)  # an nn.Linear inside


def test_a_user_rule_that_matches_nothing_is_a_typo():
    with pytest.raises(RoleError, match=r"rule\(s\) \['name hed.weight'\] matched no parameter"):
        assign(MLP(), [by_name("output", "hed.weight")])


def test_a_state_dict_without_fan_in_axes_loads_and_steps(tiny_model):
    """Checkpoints saved before the groups kept their axes (torch replaces a group's keys by
    the saved ones on load): the model's layout is put back."""
    opt = build_optimizer("scale", tiny_model)
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        group.pop("fan_in", None)
    twin = build_optimizer("scale", tiny_model)
    twin.load_state_dict(saved)
    assert [g.get("fan_in") for g in twin.param_groups] == [g.get("fan_in") for g in opt.param_groups]
    tiny_model(input_ids=torch.arange(8).view(1, 8), labels=torch.arange(8).view(1, 8)).loss.backward()
    twin.step()
