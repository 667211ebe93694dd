"""The trainer's CUDA-only branches, exercised on CPU where torch allows it: bf16
autocast (``--precision bf16-mixed``, the default on CUDA) and ``torch.compile`` (inductor's
CPU backend). Collectives run on gloo in ``test_parallel`` and ``test_train``."""

import pytest
import torch

from analysis.training import train
from tests.conftest import tiny_config


def test_bf16_autocast_keeps_fp32_master_weights_and_tracks_fp32(tmp_path):
    full = train(tiny_config(steps=4, device="cpu", precision="fp32"), progress=False)
    mixed = train(
        tiny_config(steps=4, device="cpu", precision="bf16-mixed"), out=tmp_path / "mixed", progress=False
    )
    assert mixed.losses != full.losses  # autocast did run in bf16
    assert mixed.losses == pytest.approx(full.losses, rel=2e-2)
    saved = torch.load(tmp_path / "mixed" / "ckpt-00000004.pt", weights_only=False)
    assert {t.dtype for t in saved["model"].values()} == {torch.float32}


def test_compiled_model_trains_like_the_eager_one():
    eager = train(tiny_config(steps=3, device="cpu"), progress=False)
    compiled = train(tiny_config(steps=3, device="cpu", compile=True), progress=False)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)
