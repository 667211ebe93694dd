import math

import pytest
from scipy import stats

from analysis.recording import Recorder
from analysis.results.report import claims, final_results, interval, paired_difference, summary


def _fake_run(root, label, seed, loss, optimizer=None, momentum=None, state=0, variance=None):
    """A finished run directory with the fields the report reads."""
    with Recorder(root / label / f"seed{seed}") as rec:
        rec.write_config({"config": {"optimizer": optimizer or label, "momentum": momentum,
                                     "label": label, "model": "nano", "seed": seed, "lr": 1e-3}})
        rec.log(1, {"loss": loss + 1})
        for step, by_role in (variance or {}).items():
            for role, value in by_role.items():
                rec.log(step, {"grad_var": value, "grad_var_rel": value}, param=f"{role}.w", role=role)
        rec.finish({"first_eval_loss": 9.0, "final_eval_loss": loss, "optimizer_state_bytes": state})


def test_interval_is_student_t():
    values = [1.0, 2.0, 4.0]
    mean, half = interval(values)
    sd = stats.tstd(values)
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert math.isnan(interval([1.0])[1]) and math.isnan(interval([])[0])


def test_paired_difference_pairs_by_seed(tmp_path):
    for seed, (a, b) in enumerate([(5.0, 5.5), (6.0, 6.4), (4.0, 4.6)]):
        _fake_run(tmp_path, "scale", seed, a)
        _fake_run(tmp_path, "col_norm", seed, b)
    diff, half, n = paired_difference(final_results(tmp_path), "scale", "col_norm")
    assert n == 3 and diff == pytest.approx(-0.5)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * stats.tstd([-0.5, -0.4, -0.6]) / math.sqrt(3))


def _ladder(root, losses, variance):
    for seed in range(3):
        for label, loss in losses.items():
            optimizer = "col_norm" if label.startswith("col_norm") else label
            _fake_run(root, label, seed, loss + 0.01 * seed, optimizer=optimizer,
                      state=2_099_712 if label == "scale" else 0,
                      variance=variance if label == "col_norm" else None)


def test_claims_hold_when_the_numbers_say_so(tmp_path):
    _ladder(tmp_path, {"sgd": 8.95, "col_norm": 6.0, "scale": 5.5, "adamw": 5.48},
            {s: {"output": 3.0, "embedding": 2.0, "hidden": 0.1} for s in (1, 2, 3)})
    verdicts = [c.held for c in claims(tmp_path, final_results(tmp_path))]
    assert verdicts == [True, True, True, True, True, True]


def test_claims_fail_honestly_with_their_numbers(tmp_path):
    _ladder(tmp_path, {"sgd": 5.0, "col_norm": 6.0, "scale": 6.2, "adamw": 5.0},
            {s: {"output": 1.0, "embedding": 2.0, "hidden": 0.1} for s in (1, 2, 3)})
    checked = claims(tmp_path, final_results(tmp_path))
    assert [c.held for c in checked[:5]] == [False, False, False, False, False]
    assert "embedding 2" in checked[0].evidence
    assert "133% of col_norm's progress" in checked[1].evidence     # sgd trains here
    assert "0.200" in checked[3].evidence


def test_missing_arms_are_not_checked_rather_than_guessed(tmp_path):
    _fake_run(tmp_path, "adamw", 0, 5.0)
    checked = claims(tmp_path, final_results(tmp_path))
    assert all(c.held is None for c in checked)
    assert "needs" in checked[1].evidence and "needs" in checked[2].evidence


def test_summary_counts_seeds_and_divergence(tmp_path):
    _fake_run(tmp_path, "sgd", 0, float("nan"))
    _fake_run(tmp_path, "sgd", 1, 6.0)
    table = summary(final_results(tmp_path))
    assert table.loc["sgd", "seeds"] == 2 and table.loc["sgd", "loss"] == 6.0
