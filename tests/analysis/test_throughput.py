"""Throughput against the machine's limit: every logged step records its FLOP/s and, on CPU,
its share of a measured matmul peak, calibrated once per CPU, thread count and dtype."""

import json

import torch

from analysis.recording import load_run
from analysis.train import throughput
from analysis.train.loop import train
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
    (key, peak), = cached.items()
    assert f"{torch.get_num_threads()} threads" in key and throughput.cpu_model() in key
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
