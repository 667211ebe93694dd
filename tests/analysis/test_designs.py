"""A reader's design as a recipe, and the race against SCALE and tuned AdamW."""

from dataclasses import replace

import pytest
import torch

from analysis.optim import recipes
from analysis.optim.designs import design, register_design
from analysis.optim.hyper import RecipeError
from analysis.optim.inspection import state_numel
from analysis.optim.recipes import build_optimizer, get_recipe
from analysis.optim.transforms import chain, momentum, normalize
from analysis.protocol.arms import Arm, tuned_lrs, tuned_mults, tuned_points
from analysis.protocol.presets import PRESETS
from analysis.results.run_set import REFERENCE
from analysis.teaching import race
from toy_models.llama import build_model, load_config, matrix_shapes


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Designs registered here stay in this test (the registry is the process's)."""
    monkeypatch.setattr(recipes, "USER", dict(recipes.USER))


def _register():
    register_design(
        "test+embedding",
        design(
            hidden=lambda fan_in: normalize(fan_in),
            embedding=lambda fan_in: chain(momentum(0.9), normalize(fan_in)),
            output=lambda fan_in: chain(momentum(0.9), normalize(fan_in)),
        ),
        "test design",
    )


def test_a_design_steps_as_its_chains_say_and_declares_its_state():
    _register()
    model = build_model(load_config("nano", vocab_size=256), seed=0)
    opt = build_optimizer("test+embedding", model, lr=1e-2)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    opt.step()
    step = (before - model.model.layers[0].mlp.up_proj.weight.detach()) / 1e-2
    # hidden: one unit RMS per output unit, no momentum
    torch.testing.assert_close(step.square().mean(dim=1).sqrt(), torch.ones(step.size(0)), atol=1e-4, rtol=0)
    # the declared state (read from the transforms) is what the optimizer holds
    shapes = [(role, shape) for _, role, shape in matrix_shapes(load_config("nano", vocab_size=256))]
    declared = sum(get_recipe("test+embedding").state_rules()[role](shape, 1) for role, shape in shapes)
    assert declared == state_numel(opt)
    assert get_recipe("test+embedding").state_rules()["hidden"].text == "0 x"


def test_a_builtin_name_is_refused():
    with pytest.raises(RecipeError, match="built-in"):
        register_design("scale", design(), "not SCALE")


@pytest.mark.skipif(not (REFERENCE / "tuning.json").exists(), reason="reference recordings not built")
def test_the_race_reuses_only_reference_runs_of_the_same_configuration():
    lr, beta2 = tuned_points()["scale"]  # quick is the reference's setting: its runs are reused
    mult = tuned_mults().get("scale", 1.0)
    seed = 100  # a held-out seed: the reference reports those
    config = PRESETS["quick"].config(Arm("scale", "scale"), seed, lr, beta2=beta2, mult=mult)
    assert race._reference_run("scale", seed, config) is not None
    assert race._reference_run("scale", seed, replace(config, hyper=replace(config.hyper, lr=lr * 2))) is None
    assert race._reference_run("scale", seed, replace(config, steps=60)) is None
    for other in ({"betas": (0.9, 0.5)}, {"momentum": "all"}, {"output_lr_mult": mult * 2}):
        assert (
            race._reference_run("scale", seed, replace(config, hyper=replace(config.hyper, **other))) is None
        )


@pytest.mark.skipif(not (REFERENCE / "tuning.json").exists(), reason="reference recordings not built")
def test_a_smoke_race_gives_a_paired_leaderboard(tmp_path):
    _register()
    runs = race.race({"test+embedding": tuned_lrs()["scale"]}, seeds=(0, 1), preset="smoke", out=tmp_path)
    assert set(runs["source"]) == {"trained now"} and len(runs) == 6
    board = race.leaderboard(runs)
    assert set(board.index) == {"scale", "adamw", "test+embedding"}
    assert list(board["loss"]) == sorted(board["loss"])  # best first
    scale, mine = (runs[runs.label == n].set_index("seed")["loss"] for n in ("scale", "test+embedding"))
    assert board.loc["test+embedding", "minus_scale"] == pytest.approx((mine - scale).mean())
    assert board.loc["adamw", "loss_ci"] > 0
    # a design's Adam part is SCALE's: the same beta2, and every seed shown
    assert board.loc["test+embedding", "beta2"] == board.loc["scale", "beta2"] == tuned_points()["scale"][1]
    assert board.loc["adamw", "per_seed"].count(" / ") == 1 and board.loc["adamw", "seed_std"] > 0


def test_the_race_reuses_a_run_whose_segments_record_the_effective_settings(tmp_path, monkeypatch):
    # a run's segments record the recipe's default placement ("output" for scale): the race's
    # config, which leaves it to the recipe, is the same configuration
    from analysis.training.loop import train

    config = PRESETS["smoke"].config(Arm("scale", "scale"), 0, 1e-3)
    assert config.hyper.momentum is None
    train(config, out=tmp_path / "scale" / "seed0", overwrite=True, progress=False)
    monkeypatch.setattr(race, "REFERENCE", tmp_path)
    assert race._reference_run("scale", 0, config) is not None
    assert (
        race._reference_run("scale", 0, replace(config, hyper=replace(config.hyper, momentum="none"))) is None
    )
