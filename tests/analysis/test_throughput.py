"""Throughput against the machine's limit: every logged step records its FLOP/s and, on CPU,
its share of a measured matmul peak, calibrated once per CPU, thread count and dtype."""

import json

import torch

from analysis.provenance import cpu_model
from analysis.recording import load_run
from analysis.training import throughput
from analysis.training.loop import train
from tests.conftest import tiny_config


def test_a_cpu_run_records_flops_and_its_share_of_the_measured_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALE_LAB_HOME", str(tmp_path / "home"))
    train(tiny_config(steps=3, eval_every=0), out=tmp_path / "r", progress=False)
    frame = load_run(tmp_path / "r")
    flops = frame[frame["stat"] == "flops_per_s"]["value"].to_numpy()
    share = frame[frame["stat"] == "cpu_peak_fraction"]["value"].to_numpy()
    assert len(flops) == len(share) == 3 and (flops > 0).all()
    # achieved = tokens/s x 6N + 12LhT per token; the share is that over the calibrated peak
    cached = json.loads((tmp_path / "home" / "cache" / "matmul_peak.json").read_text())
    ((key, peak),) = cached.items()
    assert f"{torch.get_num_threads()} threads" in key and cpu_model() in key
    assert abs(share - flops / peak).max() < 1e-9 * share.max()
    assert (share > 0).all()


def test_the_calibration_is_measured_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALE_LAB_HOME", str(tmp_path))
    calls = []
    real = throughput.measure_matmul_peak

    def counted(dtype, *args, **kwargs):
        calls.append(dtype)
        return real(dtype, n=64, repeats=1)

    monkeypatch.setattr(throughput, "measure_matmul_peak", counted)
    first = throughput.cpu_peak(torch.float32)
    assert throughput.cpu_peak(torch.float32) == first and first > 0
    throughput.cpu_peak(torch.bfloat16)
    assert calls == [torch.float32, torch.bfloat16]


def _fake_rates(monkeypatch, fp32: float, bf16: float) -> list:
    """``step_seconds`` answering as if fp32 and bf16-mixed ran at these tokens/s."""
    calls = []

    def timed(model, tokens, precision):
        calls.append(precision)
        return tokens.numel() / (bf16 if precision == "bf16-mixed" else fp32)

    monkeypatch.setattr(throughput, "step_seconds", timed)
    return calls


def test_auto_precision_takes_bf16_mixed_only_when_it_is_clearly_faster(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("SCALE_LAB_HOME", str(tmp_path))
    calls = _fake_rates(monkeypatch, fp32=1000.0, bf16=1050.0)  # 5%: within the margin
    assert throughput.fastest_cpu_precision(tiny_model, "a", 2, 16)["precision"] == "fp32"
    assert calls.count("fp32") == calls.count("bf16-mixed") == 1 + throughput.AUTO_ROUNDS
    _fake_rates(monkeypatch, fp32=1000.0, bf16=1000.0 * throughput.AUTO_MARGIN)
    found = throughput.fastest_cpu_precision(tiny_model, "b", 2, 16)
    assert found["precision"] == "bf16-mixed"
    assert found["tokens_per_s"]["fp32"] == 1000.0
    calls = _fake_rates(monkeypatch, fp32=1.0, bf16=1e9)
    assert throughput.fastest_cpu_precision(tiny_model, "a", 2, 16)["precision"] == "fp32"  # cached
    assert calls == []


def test_an_auto_run_records_its_pick_trains_as_that_precision_and_resumes_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALE_LAB_HOME", str(tmp_path / "home"))
    auto = train(
        tiny_config(steps=4, save_every=2, precision="auto", device="cpu"),
        out=tmp_path / "auto",
        progress=False,
    )
    recorded = json.loads((tmp_path / "auto" / "config.json").read_text())
    pick = recorded["precision"]
    assert pick in ("fp32", "bf16-mixed") and recorded["precision_measured"]["precision"] == pick
    assert set(recorded["precision_measured"]["tokens_per_s"]) == {"fp32", "bf16-mixed"}
    # the measurement does not touch the run: the same losses as the pick asked for by name
    named = train(tiny_config(steps=4, precision=pick, device="cpu"), out=tmp_path / "named", progress=False)
    assert auto.losses == named.losses
    # a resume keeps the recorded precision: nothing is measured, the model is built at the pick
    from analysis.training import setup

    (tmp_path / "auto" / "result.json").unlink()
    monkeypatch.setattr(throughput, "fastest_cpu_precision", _must_not_measure)
    built = []
    real_build = setup.build
    monkeypatch.setattr(
        setup,
        "build",
        lambda config, device, precision, *a: (
            built.append(precision),
            real_build(config, device, precision, *a),
        )[1],
    )
    train(
        tiny_config(steps=6, save_every=2, precision="auto", device="cpu"),
        out=tmp_path / "auto",
        resume=True,
        allow_change=True,
        progress=False,
    )
    assert built == [pick]
    frame = load_run(tmp_path / "auto")
    assert frame[frame["stat"] == "loss"]["step"].max() == 6


def _must_not_measure(*args):
    raise AssertionError("a resumed run measured its precision again")


def test_the_trainer_says_what_auto_picked(tmp_path, monkeypatch, capsys):
    from analysis.training import main

    monkeypatch.setenv("SCALE_LAB_HOME", str(tmp_path / "home"))
    _fake_rates(monkeypatch, fp32=2000.0, bf16=1000.0)
    assert (
        main(
            [
                "--model",
                "nano",
                "--steps",
                "2",
                "--batch_size",
                "2",
                "--seq_len",
                "16",
                "--eval_every",
                "0",
                "--eval_tokens",
                "64",
                "--device",
                "cpu",
                "--no-progress",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    assert "precision auto: fp32 (tokens/s fp32 2.0k, bf16-mixed 1.0k)" in capsys.readouterr().out
