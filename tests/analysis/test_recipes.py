import copy
import math

import pytest
import torch

from analysis.optim.inspection import state_numel
from analysis.optim.maths import as_tensor, rms_normalize
from analysis.optim.optimizer import ChainedOptimizer
from analysis.optim.recipes import RecipeError, build_optimizer, get_recipe, recipe_names
from analysis.optim.roles import RoleError, assign_roles, default_rules
from analysis.optim.transforms import chain, momentum, normalize


def _batch(seed=0, n=4, t=12, vocab=64):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def _train(model, opt, steps, seed0=0):
    for s in range(steps):
        x = _batch(seed0 + s)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()


def _naive_scale(model, lr, adam_lr, beta, vector_rule, steps, loss_scale):
    """SCALE transcribed from arXiv 2506.16659 (Algorithm 1) and its code release: rows of
    hidden/output matrices normalized to unit RMS, the embedding per column (dim 0), EMA
    momentum (no bias correction) on lm_head before normalizing, Adam on vectors. The release's
    vector rule puts eps on the uncorrected v and folds both corrections into the step size;
    torch's divides v by its correction first."""
    m_head = torch.zeros_like(model.lm_head.weight)
    adam = {n: [torch.zeros_like(p), torch.zeros_like(p)] for n, p in model.named_parameters() if p.ndim == 1}
    for step in range(1, steps + 1):
        x = _batch(step - 1)
        (model(input_ids=x, labels=x).loss * loss_scale).backward()
        with torch.no_grad():
            for name, p in model.named_parameters():
                g = p.grad
                if p.ndim == 1:
                    m, v = adam[name]
                    m.mul_(0.9).add_(0.1 * g)
                    v.mul_(0.999).add_(0.001 * g * g)
                    if vector_rule == "published":
                        step_size = adam_lr * math.sqrt(1 - 0.999**step) / (1 - 0.9**step)
                        p -= step_size * m / (v.sqrt() + 1e-8)
                    else:
                        p -= adam_lr * (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8)
                    continue
                if name == "lm_head.weight":
                    m_head = beta * m_head + (1 - beta) * g
                    g = m_head
                dim = 0 if "embed_tokens" in name else 1
                rms = torch.sqrt(torch.mean(g * g, dim=dim, keepdim=True))
                p -= lr * g / torch.clamp(rms, min=1e-8)
        model.zero_grad()
    return model


# Gradients scaled by 1e-4 put the vectors' |g| near 1e-7, where eps = 1e-8 matters (the
# release's rule moves such a coordinate about 1.4x as far at step 1); normalized matrices
# do not see the scale.
LOSS_SCALE = 1e-4


@pytest.mark.parametrize("vector_rule", ["published", "torch"])
def test_scale_matches_a_naive_loop_written_from_the_paper(tiny_model, vector_rule):
    """10 steps in float64 agree to 1e-6 with the naive transcription of each vector rule;
    ``published`` is the default."""
    lr, adam_lr, beta = 3e-3, 2e-2, 0.9
    tiny_model.double()
    ref = copy.deepcopy(tiny_model)
    overrides = {} if vector_rule == "published" else {"vector_rule": "torch"}
    opt = build_optimizer("scale", tiny_model, lr=lr, adam_lr=adam_lr, beta=beta, **overrides)
    for s in range(10):
        x = _batch(s)
        (tiny_model(input_ids=x, labels=x).loss * LOSS_SCALE).backward()
        opt.step()
        opt.zero_grad()
    _naive_scale(ref, lr, adam_lr, beta, vector_rule, 10, LOSS_SCALE)
    for (name, a), b in zip(tiny_model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert state_numel(opt) == tiny_model.lm_head.weight.numel() + 2 * sum(
        p.numel() for p in tiny_model.parameters() if p.ndim == 1
    )


def test_the_two_vector_rules_differ_on_small_gradient_vectors(tiny_model):
    """The check above has teeth: the two rules move the small-gradient vectors apart by far
    more than its 1e-6 tolerance."""
    tiny_model.double()
    published = _naive_scale(copy.deepcopy(tiny_model), 3e-3, 2e-2, 0.9, "published", 10, LOSS_SCALE)
    torch_rule = _naive_scale(copy.deepcopy(tiny_model), 3e-3, 2e-2, 0.9, "torch", 10, LOSS_SCALE)
    gaps = {
        n: (a - b).abs().max().item()
        for (n, a), b in zip(published.named_parameters(), torch_rule.parameters())
    }
    assert max(gap for n, gap in gaps.items() if n.endswith("norm.weight")) > 1e-3


def test_vector_rule_published_is_refused_where_torch_adamw_updates_vectors(tiny_model):
    with pytest.raises(RecipeError, match="vector_rule 'published' applies to the ladder"):
        build_optimizer("adamw", tiny_model, vector_rule="published")


def test_every_recipe_has_the_same_lr_structure(tiny_model):
    """lr on matrices (times the role multipliers), adam_lr on vectors, for every recipe."""
    for name in ("scale", "sgd", "adamw", "muon", "swan", "adafactor", "stable_spam"):
        opt = build_optimizer(
            name, tiny_model, lr=1e-3, adam_lr=5e-3, embedding_lr_mult=3.0, output_lr_mult=10.0
        )
        lrs = {g["label"]: g["lr"] for g in opt.param_groups}
        expected = {"embedding": 3e-3, "hidden": 1e-3, "output": 1e-2, "vector": 5e-3}
        assert lrs == pytest.approx(expected), name


def test_adamw_recipe_is_torch_adamw(tiny_model):
    ref = copy.deepcopy(tiny_model)
    opt = build_optimizer("adamw", tiny_model, lr=1e-3, weight_decay=0.1)
    groups = [
        {"params": [p for p in ref.parameters() if p.ndim >= 2], "weight_decay": 0.1},
        {"params": [p for p in ref.parameters() if p.ndim < 2], "weight_decay": 0.0},
    ]
    torch_opt = torch.optim.AdamW(groups, lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    _train(tiny_model, opt, 5)
    _train(ref, torch_opt, 5)
    for a, b in zip(tiny_model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_muon_hidden_group_is_torch_muon(tiny_model):
    ref = copy.deepcopy(tiny_model)
    opt = build_optimizer("muon", tiny_model, lr=1e-3, adam_lr=1e-3)
    hidden = [p for n, p in ref.named_parameters() if assign_roles(ref)[n] == "hidden"]
    rest = [p for n, p in ref.named_parameters() if assign_roles(ref)[n] != "hidden"]
    muon = torch.optim.Muon(
        hidden, lr=1e-3, weight_decay=0.0, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw"
    )
    adam = torch.optim.AdamW(rest, lr=1e-3, weight_decay=0.0)
    _train(tiny_model, opt, 4)
    for s in range(4):
        x = _batch(s)
        ref(input_ids=x, labels=x).loss.backward()
        muon.step()
        adam.step()
        ref.zero_grad()
    for a, b in zip(tiny_model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_normalize_gives_unit_rms_and_keeps_zero_rows_finite():
    g = torch.randn(6, 10)
    g[2] = 0
    u = rms_normalize(g, dim=1)
    rms = u.square().mean(1).sqrt()
    torch.testing.assert_close(rms[[0, 1, 3, 4, 5]], torch.ones(5))
    assert torch.isfinite(u).all() and (u[2] == 0).all()
    assert rms_normalize(g, dim=0).square().mean(0).sqrt().allclose(torch.ones(10))


def test_ema_and_accumulating_momentum_give_the_same_scale_update():
    ema, acc = chain(momentum(0.9, "ema"), normalize(1)), chain(momentum(0.9, "sum"), normalize(1))
    p = torch.zeros(5, 7)
    s_ema, s_acc = ema.init(p), acc.init(p)
    for seed in range(6):
        g = torch.randn(5, 7, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(
            as_tensor(ema.update(g, s_ema, p)), as_tensor(acc.update(g, s_acc, p)), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("name", ["scale", "muon", "sign"])
def test_state_dict_round_trip_then_more_steps_is_bitwise_equal(tiny_model, name):
    twin = copy.deepcopy(tiny_model)
    opt = build_optimizer(name, tiny_model)
    _train(tiny_model, opt, 3)
    # a fresh model/optimizer pair loaded from the saved state continues identically
    twin.load_state_dict(tiny_model.state_dict())
    twin_opt = build_optimizer(name, twin)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    _train(tiny_model, opt, 3, seed0=3)
    _train(twin, twin_opt, 3, seed0=3)
    for a, b in zip(tiny_model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_role_rules_errors(tiny_model):
    rules = default_rules() + [("ghost", lambda *a: False)]
    with pytest.raises(RoleError, match="matched no parameter"):
        assign_roles(tiny_model, rules)
    tiny_model.lm_head.weight = tiny_model.model.embed_tokens.weight
    with pytest.raises(RoleError, match="tied weights"):
        assign_roles(tiny_model)


def test_roles_by_module_type(tiny_model):
    roles = assign_roles(tiny_model)
    assert roles["lm_head.weight"] == "output"
    assert roles["model.embed_tokens.weight"] == "embedding"
    assert roles["model.layers.0.self_attn.q_proj.weight"] == "hidden"
    assert roles["model.norm.weight"] == "vector"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1.0}, "lr must be > 0"),
        ({"beta": 1.0}, r"beta must be in \[0, 1\)"),
        ({"betas": (0.9, 1.5)}, "betas must be in"),
        ({"momentum": "middle"}, "unknown momentum placement"),
    ],
)
def test_bad_hyperparameters(tiny_model, kwargs, message):
    with pytest.raises(RecipeError, match=message):
        build_optimizer("scale" if "momentum" not in kwargs else "col_norm", tiny_model, **kwargs)


def test_unknown_recipe_and_missing_extra(monkeypatch):
    with pytest.raises(RecipeError, match="unknown optimizer 'adamz'; choose one of"):
        get_recipe("adamz")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytorch_optimizer" else real(name, *a)
    )
    with pytest.raises(RecipeError, match=r"pip install 'scale-lab\[baselines\]'"):
        get_recipe("galore")


def test_works_with_lr_scheduler_and_step_hooks(tiny_model):
    opt = build_optimizer("scale", tiny_model, lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    seen = []
    opt.register_step_post_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
    _train(tiny_model, opt, 1)
    sched.step()
    _train(tiny_model, opt, 1)
    assert seen == [1e-2, 5e-3]
    assert isinstance(opt, ChainedOptimizer)


WHOLE_MATRIX = ("muon", "spectral_norm", "swan", "normuon", "muoneq")


@pytest.mark.slow
@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_trains_for_100_steps(name):
    # The whole-matrix rules on nano: Newton-Schulz and power iterations on micro's matrices
    # took 30-70 s of the suite each (torch.optim.Muon in bf16: 2.7 s a step on CPUs without
    # bf16 matrix units); the others on micro.
    from analysis.training import train
    from tests.conftest import tiny_config

    model = "nano" if name in WHOLE_MATRIX else "micro"
    result = train(
        tiny_config(
            model=model, optimizer=name, steps=100, batch_size=2, seq_len=32, eval_every=0, eval_tokens=256
        ),
        progress=False,
    )
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert result.final_eval_loss < result.first_eval_loss


def test_describe_lists_every_group_with_its_rule(tiny_model):
    groups, roles = build_optimizer("scale", tiny_model).describe().split("\n\n")
    rows = {line.split()[0]: line for line in groups.splitlines()[1:]}
    assert set(rows) == {"embedding", "hidden", "output", "vector"}
    assert "momentum(0.9)" in rows["output"] and "momentum" not in rows["hidden"]
    assert "normalize(dim=0)" in rows["embedding"] and "adam" in rows["vector"]
    assert len(roles.splitlines()) == 1 + len(list(tiny_model.parameters()))  # one per parameter


def test_hf_trainer_runs_with_a_recipe_and_its_own_scheduler(tiny_model, tmp_path):
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": x, "labels": x} for x in torch.randint(0, 64, (8, 16), generator=gen)]
    opt = build_optimizer("scale", tiny_model, lr=1e-2)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        warmup_steps=1,
        lr_scheduler_type="linear",
    )
    head = tiny_model.lm_head.weight
    before = head.detach().clone()
    Trainer(model=tiny_model, args=args, train_dataset=data, optimizers=(opt, None)).train()
    assert not torch.equal(before, head.detach())
    assert any(k.endswith("momentum.buf") for k in opt.state[head])  # SCALE's one buffer


def test_pure_bf16_step_tracks_the_fp32_step(tiny_model):
    twin = copy.deepcopy(tiny_model).to(torch.bfloat16)
    x = _batch(0)
    for model in (tiny_model, twin):
        opt = build_optimizer("scale", model, lr=1e-2)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
    for (name, a), b in zip(tiny_model.named_parameters(), twin.parameters()):
        assert b.dtype == torch.bfloat16
        torch.testing.assert_close(b.float(), a, rtol=2e-2, atol=2e-3, msg=name)


@pytest.mark.parametrize("shape, dim", [((300, 48), 0), ((300, 48), 1), ((2500, 7), 0)])
def test_fused_normalized_step_equals_the_plain_formula(shape, dim):
    """The in-place ``addcmul_`` path (no temporaries) is the readable ``p - lr * g / rms``."""
    from analysis.optim.maths import Scaled, sum_of_squares
    from analysis.optim.transforms import normalize

    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(sum_of_squares(g, dim), g.square().sum(dim, keepdim=True), rtol=1e-12)
    direction = normalize(dim).update(g, {}, g)
    assert isinstance(direction, Scaled)
    p = torch.zeros_like(g)
    p.addcmul_(direction.base, direction.scale, value=-0.1)
    plain = -0.1 * g / g.square().mean(dim, keepdim=True).sqrt()
    torch.testing.assert_close(p, plain, rtol=1e-12, atol=0)
