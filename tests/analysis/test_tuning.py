"""The lr tuning's logic (grid, edge extension, best by mean over seeds, selection), driven by
a fake runner whose loss is a known function of the lr, so every decision can be checked."""

import json
import math
from dataclasses import replace

import pytest

from analysis.protocol.arms import select_arms
from analysis.protocol.presets import PRESETS
from analysis.protocol.tuning import run_preset, tune
from analysis.recording import SELECTION, TUNING


class FakeRunner:
    """Loss = (log10(lr) - log10(optimum))^2 + 0.01 seed; lr above ``diverge_above`` diverges."""

    def __init__(self, optimum, diverge_above=math.inf):
        self.optimum, self.diverge_above, self.calls = optimum, diverge_above, []

    def run(self, batch):
        out = []
        for config, _run_dir in batch:
            self.calls.append((config.label, config.hyper.lr, config.seed))
            if config.hyper.lr > self.diverge_above:
                out.append({"diverged_at": 3, "final_eval_loss": None})
            else:
                loss = (math.log10(config.hyper.lr) - math.log10(self.optimum)) ** 2 + 0.01 * config.seed
                out.append({"final_eval_loss": loss})
        return out


def _preset(**overrides):
    return replace(
        PRESETS["smoke"],
        tune_seeds=(0, 1),
        seeds=(0, 1, 2),
        centers={"scale": 1e-3, "adamw": 1e-3},
        **overrides,
    )


def test_an_optimum_outside_the_grid_is_reached_by_extension(tmp_path):
    runner = FakeRunner(optimum=1e-2)  # two x sqrt(3) steps beyond the first grid's top
    table = tune(_preset(), tmp_path, select_arms(["scale"]), runner)
    row = table["arms"]["scale"]
    assert row["interior"]
    assert row["best"] == pytest.approx(1e-3 * 3**2, rel=1e-2)  # centre x sqrt(3)^4 = 9e-3
    assert min(float(lr) for lr in row["grid"]) < row["best"] < max(float(lr) for lr in row["grid"])
    assert row["runs"] == 2 * len(row["grid"]) == len(runner.calls)
    assert json.loads((tmp_path / TUNING).read_text())["arms"]["scale"]["best"] == row["best"]


def test_extension_stops_at_its_limit_and_says_the_optimum_is_at_the_edge(tmp_path):
    table = tune(_preset(max_extensions=1), tmp_path, select_arms(["scale"]), FakeRunner(1.0))
    assert not table["arms"]["scale"]["interior"]
    assert len(table["arms"]["scale"]["grid"]) == 4


def test_a_diverged_point_counts_as_worst_and_is_written_as_null(tmp_path):
    runner = FakeRunner(optimum=1e-1, diverge_above=1.5e-3)
    table = tune(_preset(max_extensions=0), tmp_path, select_arms(["scale"]), runner)
    row = table["arms"]["scale"]
    assert row["best"] == pytest.approx(1e-3)  # the optimum is beyond, but larger lrs diverged
    assert row["grid"][f"{1e-3 * math.sqrt(3):.3g}"] == [None, None]


def test_the_reported_runs_are_the_best_lr_on_every_seed(tmp_path):
    runner = FakeRunner(optimum=1e-3)
    run_preset(_preset(), tmp_path, select_arms(["scale", "adamw"]), runner)
    listed = json.loads((tmp_path / SELECTION).read_text())["runs"]
    assert sorted(listed) == sorted(f"{arm}/lr0.001/seed{s}" for arm in ("scale", "adamw") for s in (0, 1, 2))
    # seeds 0 and 1 at the best lr were run once, by the sweep (the runner reuses finished runs)
    assert ("scale", 1e-3, 2) in runner.calls


def test_tuning_arms_in_two_calls_keeps_both(tmp_path):
    runner = FakeRunner(optimum=1e-3)
    run_preset(_preset(), tmp_path, select_arms(["scale"]), runner)
    run_preset(_preset(), tmp_path, select_arms(["adamw"]), runner)
    assert set(json.loads((tmp_path / TUNING).read_text())["arms"]) == {"scale", "adamw"}
    listed = json.loads((tmp_path / SELECTION).read_text())["runs"]
    assert {r.split("/")[0] for r in listed} == {"scale", "adamw"} and len(listed) == 6


class Beta2Runner(FakeRunner):
    """As FakeRunner, plus ``penalty`` for Adam's beta2 0.999 and ``flat`` scaling the lr term."""

    def __init__(self, optimum, penalty=0.05, flat=1.0, seed_step=0.01):
        super().__init__(optimum)
        self.penalty, self.flat, self.seed_step = penalty, flat, seed_step

    def run(self, batch):
        out = []
        for config, _ in batch:
            self.calls.append((config.label, config.hyper.lr, config.seed, config.hyper.betas[1]))
            loss = (
                self.flat * (math.log10(config.hyper.lr) - math.log10(self.optimum)) ** 2
                + self.seed_step * config.seed
                + (self.penalty if config.hyper.betas[1] == 0.999 else 0)
            )
            out.append({"final_eval_loss": loss})
        return out


def _v2(**overrides):
    return replace(
        PRESETS["smoke"],
        tune_seeds=(0,),
        seeds=(0, 1, 2),
        grid_factor=2.0,
        centers={"scale": 1e-3},
        beta2_choices=(0.999, 0.95),
        bracket_beyond_noise=True,
        **overrides,
    )


def test_every_arm_gets_the_same_beta2_choice_and_the_better_one_is_reported(tmp_path):
    runner = Beta2Runner(optimum=2e-3)
    row = tune(_v2(), tmp_path, select_arms(["scale"]), runner)["arms"]["scale"]
    assert row["beta2"] == 0.95 and row["best"] == pytest.approx(2e-3)
    assert row["bracketed"] and row["seed_noise"] == pytest.approx(0.01)
    # the reported point ran on every seed, at the chosen beta2
    assert {(s, b) for label, lr, s, b in runner.calls if lr == row["best"]} >= {
        (0, 0.95),
        (1, 0.95),
        (2, 0.95),
    }
    assert row["runs"] == len(runner.calls)


def test_an_optimum_within_the_seed_noise_is_extended_until_the_limit_and_reported_unbracketed(tmp_path):
    runner = Beta2Runner(optimum=1e-3, penalty=0.0, flat=0.01, seed_step=0.2)
    row = tune(_v2(max_extensions=2), tmp_path, select_arms(["scale"]), runner)["arms"]["scale"]
    assert not row["bracketed"]
    assert len(row["grid"]) > 3  # the noise check added points beyond
    assert row["runs"] == len(runner.calls)


def test_an_untuned_preset_takes_the_tunings_multiplier(tmp_path, monkeypatch):
    """A preview (quick, smoke) mirrors the shipped tuning: lr, beta2 and, from protocol
    version 3 on, the embedding/output multiplier (a version-2 tuning has none: 1.0)."""
    import json

    from analysis.protocol import tuning
    from analysis.protocol.arms import tuned_mults
    from analysis.protocol.runner import Runner
    from analysis.recording import run_config

    table = {"arms": {"scale": {"best": 4e-3, "beta2": 0.95, "mult": 4.0}, "adamw": {"best": 4e-3}}}
    (tmp_path / "tuning.json").write_text(json.dumps(table))
    assert tuned_mults(tmp_path / "tuning.json") == {"scale": 4.0, "adamw": 1.0}
    monkeypatch.setattr(tuning, "tuned_mults", lambda: {"scale": 2.0})
    dirs = run_preset(PRESETS["smoke"], tmp_path / "runs", select_arms(["scale"]), Runner(1))
    config = run_config(dirs[0])["config"]
    assert config["embedding_lr_mult"] == config["output_lr_mult"] == 2.0
