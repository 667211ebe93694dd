"""The benchmarks' statistics (the numbers themselves are printed, never asserted)."""

import numpy as np
import pytest

from analysis.bench import bench_optimizer, ratio_interval


def test_ratio_interval_is_the_median_of_per_round_ratios_with_a_bracketing_interval():
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 2.0, 40)  # machine drift shared by a round
    slowed = base * rng.normal(1.05, 0.01, 40)
    r = ratio_interval(slowed.tolist(), base.tolist())
    assert r["median"] == pytest.approx(np.median(slowed / base))
    assert r["low"] < r["median"] < r["high"] and r["rounds"] == 40
    assert 1.03 < r["low"] and r["high"] < 1.07  # drift cancels within a round
    same = ratio_interval([2.0] * 20, [1.0] * 20)
    assert same["median"] == same["low"] == same["high"] == 2.0


def test_optimizer_bench_reports_intervals():
    r = bench_optimizer("nano", repeats=5, warmup=1)
    for key in (
        "scale_over_sgd",
        "scale_over_adamw_foreach",
        "scale_over_adamw_fused",
        "fused_over_sgd",
        "fused_over_adamw_fused",
    ):
        assert r[key]["low"] <= r[key]["median"] <= r[key]["high"] and r[key]["rounds"] == 5


def test_role_bench_times_each_role_on_its_own_tensors():
    from analysis.bench import FUSED_PASS_FLOOR, PASS_FLOOR, bench_roles
    from analysis.optim.recipes import build_optimizer
    from toy_models.llama import build_model, load_config

    roles = bench_roles("nano", repeats=3, warmup=1)
    layout = build_optimizer("scale", build_model(load_config("nano", vocab_size=8192))).layout
    for role, row in roles.items():
        assert row["elements"] == sum(p.param.numel() for p in layout.by_role()[role])
        assert row["floor"] == PASS_FLOOR[role] and row["scale_over_sgd"]["rounds"] == 3
        assert row["fused_floor"] == FUSED_PASS_FLOOR[role] <= row["floor"]
        assert row["fused_over_sgd"]["rounds"] == 3


def test_embedding_batch_bench_steps_only_a_batchs_rows():
    from analysis.bench import bench_embedding_batch

    r = bench_embedding_batch("nano", repeats=3, warmup=1, batch=(4, 16))
    assert 0 < r["rows"] <= 64 < r["vocab"] == 8192 and r["fused_over_sgd"]["rounds"] == 3


def test_the_gpu_check_runs_in_cpu_smoke_mode(tmp_path, capsys):
    import json

    from analysis import bench

    out = tmp_path / "gpu.json"
    assert bench.main(["gpu", "--device", "cpu", "--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["fused_vs_readable"]["equal"]
    assert [r["optimizer"] for r in report["runs"]] == ["scale", "adamw"]
    assert all(r["tokens_per_s"] > 0 and 0 < r["cpu_peak_fraction"] for r in report["runs"])
    assert "fused vs readable max relative difference" in capsys.readouterr().out
    import torch

    if not torch.cuda.is_available():
        assert bench.main(["gpu", "--out", str(out)]) == 2
        assert "needs a GPU" in capsys.readouterr().err


def test_instrument_bench_times_the_modes_asked_for_against_off(capsys):
    from analysis.bench import main

    assert main(["instrument", "--models", "nano", "--repeats", "2", "--modes", "default"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "interval +-" in out and "every_step" not in out
    assert main(["instrument", "--modes", "default,sometimes"]) == 2
    assert "unknown --modes entry 'sometimes'" in capsys.readouterr().err
