"""The placement advisor on real model families: the project's LLaMA, GPT-2 (Conv1D, a tied
embedding), a Qwen2 with grouped-query attention, a Mixtral-style mixture of experts (its router
a role of its own) and a plain MLP on synthetic data; the exact knapsack; the command line."""

import itertools
import random

import pytest
import torch
from torch import nn

from analysis.advice.advisor import advise, memory_table
from analysis.advice.plan import best_under, groups, parse_budget, predicted_gains
from analysis.advice.probe import ProbeConfig
from analysis.optim.hyper import momentum_matrices
from analysis.optim.placement import read_placement
from analysis.optim.recipes import build_optimizer
from analysis.optim.roles import RoleError, assign, tied

QUICK = ProbeConfig(steps=6, warmup=2, points=2, k=3, seeds=2, lr=1e-2)


def _tokens(n=12, vocab=64, t=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (2, t), generator=g) for _ in range(n)]


def test_the_knapsack_is_exact_against_every_subset():
    import pandas as pd

    rng = random.Random(0)
    for trial in range(20):
        table = pd.DataFrame(
            {
                "group": [f"g{i}" for i in range(8)],
                "bytes": [rng.randint(1, 50) * 1000 for _ in range(8)],
                "gain": [rng.random() for _ in range(8)],
            }
        )
        budget = rng.randint(0, int(table["bytes"].sum()))
        best = max(
            sum(table.loc[list(s), "gain"])
            for r in range(9)
            for s in itertools.combinations(range(8), r)
            if sum(table.loc[list(s), "bytes"]) <= budget
        )
        chosen = best_under(table, budget)
        assert table.loc[chosen, "bytes"].sum() <= budget
        assert table.loc[chosen, "gain"].sum() == pytest.approx(best, rel=1e-9), trial


def test_a_budget_is_a_fraction_of_adamw_or_a_size():
    assert parse_budget(0.3, 1000) == pytest.approx(300)
    assert parse_budget("0.5", 1000) == pytest.approx(500)
    assert parse_budget("12MB", 1) == 12e6 and parse_budget("1.5GB", 1) == 1.5e9
    with pytest.raises(ValueError, match="a fraction of AdamW's state"):
        parse_budget("lots", 1)


def test_the_llama_advice_names_matrices_the_trainer_places_momentum_on(tiny_model, tmp_path):
    advice = advise(tiny_model, _tokens(), budget=0.3, by="type", probe_config=QUICK)
    matrices = advice.matrices
    assert len(matrices) == 2 + 2 * 7 and (matrices["sigma2"] > 0).all()
    assert matrices["sigma2_std"].notna().all()  # two seeds: the probe's own spread
    by_type = advice.table.set_index("group")
    assert by_type.loc["model.layers.*.mlp.down_proj.weight", "matrices"] == 2  # one glob, both blocks
    layout = assign(tiny_model)
    named = momentum_matrices(layout, tuple(advice.momentum_on)) if advice.momentum_on else set()
    assert named == {
        n for n, p in layout.params.items() if any(n == m or _glob(m, n) for m in advice.momentum_on)
    }
    assert advice.state_bytes <= advice.budget_bytes
    paths = advice.save(tmp_path)
    placement = read_placement(f"advised:{paths['placement.json']}")
    assert placement["momentum_on"] == tuple(advice.momentum_on) and placement["optimizer"] == "col_norm"
    recipe = advice.recipe(lr=1e-3)
    build_optimizer(recipe.pop("name"), tiny_model, **recipe)


def _glob(pattern, name):
    import fnmatch

    return fnmatch.fnmatch(name, pattern)


def test_gpt2_conv1d_and_its_tied_embedding_one_buffer_for_two_roles():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config)
    with pytest.raises(RoleError, match="tied"):  # one matrix, two roles: the user says which
        advise(model, _tokens(), probe_config=QUICK)
    advice = advise(model, _tokens(), budget=1.0, by="matrix", probe_config=QUICK, rules=[tied("output")])
    assert any("tied" in note and "one momentum buffer serves both roles" in note for note in advice.notes)
    names = list(advice.matrices["name"])
    assert len({"transformer.wte.weight", "lm_head.weight"} & set(names)) == 1  # one parameter, one row
    assert "transformer.h.0.attn.c_attn.weight" in names  # Conv1D, fan-in on dim 0


def test_qwen2_grouped_query_attention_costs_its_own_shapes():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=32,
    )  # fmt: skip
    advice = advise(Qwen2ForCausalLM(config), _tokens(), budget="2kB", by="matrix", probe_config=QUICK)
    rows = advice.matrices.set_index("name")
    assert rows.loc["model.layers.0.self_attn.k_proj.weight", "bytes"] == 4 * 4 * 16  # one kv head of 4
    assert rows.loc["model.layers.0.self_attn.q_proj.weight", "bytes"] == 4 * 16 * 16
    assert advice.state_bytes <= 2000 or advice.chosen.empty


def _mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    return MixtralForCausalLM(
        MixtralConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2,
        )
    )  # fmt: skip


def test_a_mixture_of_experts_router_is_a_role_of_its_own():
    """Mixtral's router and stacked experts need no rule: the router is costed and placed as a
    role of its own, and the advice trains (momentum on the routers only)."""
    model = _mixtral()
    layout = assign(model).params
    router, experts = layout["model.layers.0.mlp.gate.weight"], layout["model.layers.0.mlp.experts.down_proj"]
    assert (router.role, router.part, router.fan_in) == ("hidden", "router", (1,))
    assert (experts.role, experts.part, experts.fan_in) == ("hidden", "experts", (2,))
    advice = advise(model, _tokens(), by="role", probe_config=QUICK)
    table = advice.table.set_index("group")
    assert {"router", "experts", "hidden", "output", "embedding"} <= set(table.index)
    assert table.loc["router", "bytes"] == 2 * 4 * 16 * 4  # two layers of (4 experts, 16) floats
    assert (advice.matrices["sigma2"] > 0).all()
    optimizer = build_optimizer(
        "col_norm", model, lr=1e-2, momentum="none", momentum_on=table.loc["router", "patterns"]
    )
    model(input_ids=_tokens()[0], labels=_tokens()[0]).loss.backward()
    optimizer.step()
    names = {id(p): n for n, p in model.named_parameters()}
    with_buffer = {names[id(p)] for p, s in optimizer.state.items() if any("momentum" in k for k in s)}
    assert with_buffer == {"model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight"}


def test_stacked_experts_are_normalized_per_expert_and_output_unit():
    """col_norm on a (experts, out, in) tensor: every expert's every output unit moves by the
    same RMS, as each expert's own Linear would; row_norm normalizes over the output axis."""
    model = _mixtral()
    experts = model.model.layers[0].mlp.experts.gate_up_proj
    for kind, axis in (("col_norm", 2), ("row_norm", 1)):
        optimizer = build_optimizer(kind, model, lr=1.0, momentum="none", weight_decay=0.0)
        before = experts.detach().clone()
        for p in model.parameters():
            p.grad = torch.randn_like(p) * torch.rand(p.shape[0], *([1] * (p.ndim - 1)))
        optimizer.step()
        rms = (experts.detach() - before).pow(2).mean(dim=axis).sqrt()
        assert torch.allclose(rms, rms.flatten()[0].expand_as(rms), rtol=1e-4), kind


def test_a_model_that_is_not_a_language_model():
    """An MLP regressing synthetic data, with its own loss: every Linear weight is a matrix."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    g = torch.Generator().manual_seed(1)
    batches = [(x := torch.randn(16, 8, generator=g), x.sum(1, keepdim=True)) for _ in range(12)]

    def loss(model, batch):
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    advice = advise(mlp, batches, budget=0.5, by="matrix", loss_fn=loss, probe_config=QUICK)
    assert list(advice.matrices["name"]) == ["0.weight", "2.weight", "4.weight"]
    assert (advice.matrices["sigma2"] > 0).all() and advice.state_bytes <= advice.budget_bytes


def test_the_gain_is_the_theorem_weight_times_the_variance(tiny_model):
    import pandas as pd

    frame = pd.DataFrame({"sigma2": [2.0], "sigma2_std": [0.5]})
    out = predicted_gains(frame, beta=0.9)
    assert out["gain"].iloc[0] == pytest.approx(2.0 * (1 - 0.1 / 1.9))
    table = groups(out.assign(name=["a"], role=["hidden"], block=["a"], type=["a"], bytes=[4]), by="role")
    assert table["patterns"].iloc[0] == ["a"]


@pytest.mark.parametrize("model", ["60m", "7b"])
def test_the_memory_side_from_shapes_alone(model):
    table = memory_table(model).set_index("placement")
    assert table.loc["adamw", "of_adamw"] == 1.0
    assert table.loc["col_norm+all", "of_adamw"] == pytest.approx(0.5, abs=1e-3)  # one buffer of two
    assert 0 < table.loc["scale (output)", "of_adamw"] < table.loc["output+embedding", "of_adamw"] < 0.5


def test_the_command_line_says_a_bad_budget_in_one_line(capsys):
    from analysis.cli import main

    assert main(["advise", "--model", "60m", "--memory-only"]) == 0
    assert "scale (output)" in capsys.readouterr().out
    assert main(["advise", "--model", "nano", "--budget", "lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget 'lots'" in err[0]


def test_the_verdicts_read_the_paired_differences_in_claim_9_s_terms():
    import pandas as pd

    from analysis.advice.verify import verdicts

    losses = {
        "advised": [3.0, 3.1, 3.2],
        "col_norm": [3.5, 3.6, 3.7],
        "scale": [3.01, 3.09, 3.21],
        "col_norm+all": [2.5, 2.6, 2.7],
    }
    results = pd.DataFrame(
        [{"label": a, "seed": s, "final_eval_loss": x} for a, xs in losses.items() for s, x in enumerate(xs)]
    )
    predicted = {"advised": 1.0, "col_norm": 0.0, "scale": 0.5, "col_norm+all": 0.8}
    by = {r["against"]: r["verdict"] for r in verdicts(results, predicted).rows}
    # advised ends lower than col_norm as predicted; ties scale; is beaten by all, against the prediction
    assert by == {"col_norm": "agree", "scale": "tied", "col_norm+all": "disagree"}


def test_verify_trains_the_four_arms_on_paired_seeds_and_resumes(tmp_path, capsys):
    from analysis.advice.verify import verification_runs
    from analysis.cli import main

    runs = verification_runs(["lm_head.weight"], "nano", 2, 1e-3, seeds=(0, 1), out=tmp_path)
    by_label = {(c.label, c.seed): c for c, _ in runs}
    assert len(runs) == 8 and by_label[("advised", 0)].hyper.momentum_on == ("lm_head.weight",)
    assert (
        by_label[("col_norm+all", 1)].hyper.momentum == "all" and not by_label[("scale", 0)].hyper.momentum_on
    )
    args = ["advise", "--model", "nano", "--probe-steps", "4", "--points", "1", "--k", "2", "--seeds", "1"]
    args += [
        "--batch_size",
        "2",
        "--seq_len",
        "16",
        "--verify",
        "2",
        "--verify-seeds",
        "2",
        "--verify-lr",
        "1e-3",
    ]
    args += ["--runs", str(tmp_path / "runs")]  # the runs apart from the small files that ship
    assert main([*args, "--out", str(tmp_path / "adv")]) == 0
    out = capsys.readouterr().out
    assert out.count("advised vs ") == 3 and "over 2 seeds" in out
    assert len(list((tmp_path / "runs").glob("*/seed*/result.json"))) == 8
    assert not (tmp_path / "adv" / "verify").exists()
    import pandas as pd

    written = pd.read_csv(tmp_path / "adv" / "verdicts.csv")
    assert list(written["against"]) == ["col_norm", "scale", "col_norm+all"] and (written["seeds"] == 2).all()
    assert set(written["verdict"]) <= {"agree", "disagree", "tied", "n/a"} and (written["steps"] == 2).all()
    runs = pd.read_csv(tmp_path / "adv" / "verify_runs.csv")
    assert len(runs) == 8 and runs["final_eval_loss"].notna().all() and runs["git_sha"].notna().all()
    assert set(runs["seed"]) == {100, 101}  # held out: col_norm's lr was tuned on seeds 0-1
    assert main([*args, "--out", str(tmp_path / "adv")]) == 0  # again: every run reused, none trained
    assert "run advised" not in capsys.readouterr().out


def test_the_track_record_judges_the_advice_against_the_shipped_reference():
    """The advisor's own probe of the reference's model, its predicted gains for the placements
    the reference ran, and the measured gains of those runs, pair by pair (claim 9's judge)."""
    from analysis.advice.track_record import track_record
    from analysis.results.run_set import REFERENCE
    from analysis.results.stats import final_results
    from toy_models.llama import build_model, load_config

    model_name = final_results(REFERENCE)["model"].iloc[0]
    model = build_model(load_config(model_name), seed=0)
    tokens = [
        torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(i))
        for i in range(12)
    ]
    advice = advise(model, tokens, probe_config=QUICK)
    record = track_record(advice)
    assert set(record.predicted) == {"output", "embedding", "all"}
    assert record.predicted["all"] >= max(record.predicted["output"], record.predicted["embedding"])
    gain, half, seeds = record.measured["output"]
    assert seeds >= 3 and gain - half > 0  # the shipped runs: output momentum helps, resolved
    assert {v for _, _, v in record.pairs} <= {"agree", "disagree", "tied"} and len(record.pairs) == 3
