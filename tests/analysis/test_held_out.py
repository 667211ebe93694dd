"""Version 3 of the tuning: tuned on two seeds, reported on held-out ones (``analysis.protocol``)."""

import json
import math
import random
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from scipy import stats

from analysis.protocol.arms import ARM_BY_LABEL, select_arms
from analysis.protocol.headline import run_held_out, seeds_to_decide
from analysis.protocol.held_out import HeldOutSweep, point_dir
from analysis.protocol.presets import PRESETS


class FakeRunner:
    """Final loss = a bowl in log2(lr / the arm's optimum) and log2(multiplier), plus seed
    noise (an unstable AdamW when asked); counts the runs it trains."""

    def __init__(self, preset, adamw_noise=0.01):
        self.preset, self.adamw_noise, self.trained = preset, adamw_noise, []

    def run(self, batch):
        out = []
        for config, run_dir in batch:
            self.trained.append((config, run_dir))
            label = config.label.split("+")[0].split("@")[0]
            best = self.preset.centers[label] * 1.4
            rng = random.Random(zlib.crc32(str(run_dir).encode()))
            noise = self.adamw_noise if label == "adamw" else 0.01
            loss = (
                4
                + 0.05 * math.log2(config.hyper.lr / best) ** 2
                + 0.1 * (math.log2(config.hyper.output_lr_mult) + 1) ** 2
                + rng.gauss(0, noise)
            )
            out.append({"final_eval_loss": loss})
        return out


REFERENCE = PRESETS["reference"]


def test_a_version_2_point_keeps_its_path():
    """So version 3 reuses the carried version-2 sweep (multiplier 1, no clipping)."""
    arm = ARM_BY_LABEL["scale"]
    assert point_dir(Path("r"), arm, 4e-3, 1, 0.95) == Path("r/scale/lr0.004-b20.95/seed1")
    assert point_dir(Path("r"), arm, 4e-3, 100, None, 0.5, 1.0).parts[-2] == "lr0.004-m0.5-clip1"


@pytest.mark.parametrize("n, largest_std", [(5, 0.039), (8, 0.058)])
def test_seeds_to_decide_the_non_inferiority_margin(n, largest_std):
    """At a true difference of 0, n seeds decide the 0.049-nat margin up to a paired std of
    0.039 (5 seeds) or 0.058 (8)."""

    def diffs(std):  # two values with this sample std
        return [std / math.sqrt(2), -std / math.sqrt(2)]

    assert seeds_to_decide(diffs(largest_std), 5, 8) <= n
    assert seeds_to_decide(diffs(largest_std + 0.002), 5, 8) > n or n == 8
    threshold = math.log(1.05) * math.sqrt(n) / stats.t.ppf(0.975, n - 1)
    assert threshold == pytest.approx(largest_std, abs=6e-4)


def test_no_reported_seed_is_a_tuning_seed_and_the_headline_gets_its_seeds(tmp_path):
    runner = FakeRunner(REFERENCE)
    reported = run_held_out(REFERENCE, tmp_path, select_arms(None), runner)
    tuning = json.loads((tmp_path / "tuning.json").read_text())
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert tuning["protocol"] == 3 and tuning["tune_seeds"] == [0, 1]
    assert sorted(selection["runs"]) == sorted(d.relative_to(tmp_path).as_posix() for d in reported)
    for label, row in tuning["arms"].items():
        held = [int(s) for s in row["held_out"]]
        assert not set(held) & {0, 1} and set(held) <= set(REFERENCE.held_out_seeds)
        assert len(held) >= (5 if label in REFERENCE.headline_arms else 3), label
        # the chosen point is the lowest mean over the tuning seeds among those at multiplier 1
        at_one = [p for p in row["points"] if p["mult"] == 1.0 and p["tuning_mean"] is not None]
        best = min(at_one, key=lambda p: p["tuning_mean"])
        assert (row["best"], row["beta2"]) == (best["lr"], best["beta2"])
        assert {p["mult"] for p in row["points"] if p["lr"] == row["best"]} >= {0.5, 1.0, 2.0}
    # the bowl's multiplier optimum is 0.5: every arm finds it at its tuned lr
    assert all(row["mult"] == 0.5 for row in tuning["arms"].values())
    rows = selection["rows"]
    assert set(rows) == {"scale+clip1", "adamw+clip1", "muon+clip1", "muon@adamw-lrs"}
    clipped = [c for c, d in runner.trained if c.label == "adamw+clip1"]
    assert clipped and all(c.grad_clip == 1.0 for c in clipped)
    muon = [c for c, d in runner.trained if c.label == "muon@adamw-lrs"][0]
    adamw = tuning["arms"]["adamw"]
    assert muon.hyper.lr * muon.hyper.output_lr_mult == pytest.approx(adamw["best"] * adamw["mult"], rel=2e-3)
    # every tuning run takes the pinned step path, unclipped
    assert all(c.fused is False and (c.grad_clip is None or "+clip" in c.label) for c, _ in runner.trained)


def test_an_unstable_adamw_gets_its_other_beta2_on_the_held_out_seeds(tmp_path):
    runner = FakeRunner(REFERENCE, adamw_noise=0.2)
    run_held_out(REFERENCE, tmp_path, select_arms(["adamw", "scale", "col_norm"]), runner)
    tuning = json.loads((tmp_path / "tuning.json").read_text())
    assert tuning["adamw_stable"] is False
    rows = json.loads((tmp_path / "selection.json").read_text())["rows"]
    other = [b for b in REFERENCE.beta2_choices if b != tuning["arms"]["adamw"]["beta2"]]
    assert f"adamw+b2{other[0]:g}" in rows


def test_a_neighbour_within_the_seed_noise_is_extended_on_means():
    """A flat bowl: every lr within the held-out noise of the best, so the sweep
    adds points further out (both tuning seeds) until bracketed or out of budget."""
    preset = replace(REFERENCE, max_extensions=3)
    sweep = HeldOutSweep(preset, ARM_BY_LABEL["scale"])
    while todo := sweep.wanted():
        for key, seed in todo:
            b, m, k = key
            sweep.runs[key][seed] = 4 + 0.001 * k * k + (0.05 if seed % 2 else -0.05) * (seed >= 100)
    assert sweep.extensions == 3 and not sweep.bracketed()
    assert sweep.summary()["bracketed"] is False


def test_version_3_runs_end_to_end_and_reports_only_held_out_seeds(tmp_path):
    """Real nano runs: tuned on seeds 0-1, reported on 100+, the report reads them."""
    from analysis.protocol.runner import Runner
    from analysis.protocol.tuning import run_preset
    from analysis.results.stats import final_results

    preset = replace(
        PRESETS["smoke"],
        tune_seeds=(0, 1),
        held_out_seeds=(100, 101, 102),
        headline_arms=("scale", "adamw"),
        headline_seeds=2,
        other_seeds=2,
        max_extensions=1,
        max_mult_extensions=0,
        clip_sensitivity=(("adamw",), 1.0),
        fused=False,
        instrument=None,
    )
    run_preset(preset, tmp_path, select_arms(["scale", "adamw", "col_norm"]), Runner(jobs=1))
    results = final_results(tmp_path)
    assert set(results["seed"]) <= {100, 101, 102} and len(results) >= 6
    assert set(results["label"]) == {"scale", "adamw", "col_norm"}  # rows stay beside the arms
    rows = json.loads((tmp_path / "selection.json").read_text())["rows"]
    assert len(rows["adamw+clip1"]) == len(results[results["label"] == "adamw"])
    from analysis.results.report import write_report

    report = write_report(tmp_path, tmp_path / "report.md").read_text()
    assert "**Seeds**: tuned on 0, 1 (means); reported on held-out seeds 100-10" in report
    assert "no reported seed tuned anything" in report and "| emb/out multiplier |" in report
    assert "- adamw+clip1 - adamw: " in report


def test_no_run_is_asked_for_twice_in_one_round(tmp_path):
    """Two rules of a stage can name the same point (a neighbour that is also within the noise):
    two workers on one run directory would fight over its lock."""
    runner = FakeRunner(REFERENCE)
    seen_twice = []
    real = runner.run

    def run(batch):
        dirs = [d for _, d in batch]
        seen_twice.extend(d for d in set(dirs) if dirs.count(d) > 1)
        return real(batch)

    runner.run = run
    run_held_out(REFERENCE, tmp_path, select_arms(None), runner)
    assert not seen_twice, seen_twice[:3]


def test_the_runner_trains_a_directory_listed_twice_once(tmp_path, monkeypatch):
    from analysis.protocol import runner

    trained = []
    monkeypatch.setattr(
        runner,
        "run_one",
        lambda config, run_dir, progress=False: trained.append(run_dir) or {"final_eval_loss": 1.0},
    )
    config = PRESETS["smoke"].config(ARM_BY_LABEL["scale"], 0, 1e-3)
    runner.Runner(jobs=1).run([(config, tmp_path / "a"), (config, tmp_path / "a")])
    assert trained == [tmp_path / "a"]


def test_a_multiplier_at_its_grid_s_edge_is_named():
    from analysis.results.held_out_report import mult_at_edge

    def point(lr, mult):
        return {"lr": lr, "beta2": 0.95, "mult": mult}

    tried = [point(0.004, m) for m in (0.5, 1.0, 2.0, 4.0, 8.0)] + [point(0.002, 16.0)]
    tuning = {
        "arms": {
            "top": {"best": 0.004, "beta2": 0.95, "mult": 8.0, "points": tried},
            "inside": {"best": 0.004, "beta2": 0.95, "mult": 2.0, "points": tried},
            "one": {"best": 0.004, "beta2": 0.95, "mult": 1.0, "points": tried[:2]},
            "bottom": {"best": 0.004, "beta2": 0.95, "mult": 0.5, "points": tried},
        }
    }
    # 16 was tried at another lr only: at the chosen lr, x8 is the top of the grid
    assert mult_at_edge(tuning) == {"top": 8.0, "bottom": 0.5}
