import pytest
import torch

from analysis.results.paper import MODEL_PARAMETERS as PAPER  # total and lm_head parameters
from toy_models.llama import (
    CPU_MODELS,
    PAPER_MODELS,
    UnknownModelError,
    build_model,
    flops_per_token,
    load_config,
    parameter_counts,
)


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_parameter_counts(name):
    counts = parameter_counts(load_config(name))
    total, head = PAPER[name]
    assert counts["total"] == pytest.approx(total, rel=5e-4)
    assert counts["output"] == pytest.approx(head, rel=1e-3)
    assert load_config(name).vocab_size == 32000
    assert not load_config(name).tie_word_embeddings


@pytest.mark.parametrize("name", CPU_MODELS)
def test_analytic_counts_match_instantiated_model(name):
    config = load_config(name)
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(config)["total"]
    assert model.lm_head.weight is not model.model.embed_tokens.weight


def test_init_is_normal_002_and_seeded():
    a, b = build_model(load_config("nano"), seed=1), build_model(load_config("nano"), seed=1)
    w = a.model.layers[0].mlp.up_proj.weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(w, b.model.layers[0].mlp.up_proj.weight)
    assert torch.all(a.model.norm.weight == 1)
    assert a.config._attn_implementation == "sdpa"


def test_unknown_model_names_choices():
    with pytest.raises(UnknownModelError, match="choose one of.*micro"):
        load_config("gpt5")


def test_flops_per_token_is_6n_plus_attention():
    config = load_config("60m")
    counts = parameter_counts(config)
    expected = 6 * (counts["hidden"] + counts["output"]) + 12 * 8 * 512 * 256
    assert flops_per_token(config, 256) == expected


@pytest.mark.parametrize("name", ["nano2k", "micro2k"])
def test_the_reference_models_are_shaped_like_the_papers(name):
    """Hidden matrices hold most parameters (the paper's 60M: 44%, 1B: 90%), with the
    2048-token BPE their config names, so the vocabulary does not dominate."""
    from toy_models.llama import model_tokenizer
    from toy_models.tokenizer import load_tokenizer

    config = load_config(name)
    counts = parameter_counts(config)
    assert counts["hidden"] / counts["total"] >= 0.5
    assert model_tokenizer(name) == "bpe-2048"
    assert len(load_tokenizer(model_tokenizer(name))) == config.vocab_size == 2048
