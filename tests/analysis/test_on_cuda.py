"""The CUDA-only paths, skipped without a GPU (``scale-lab bench gpu`` runs them where one is):
the fused SCALE step compiled by Triton equals the readable one, and a bf16 run on CUDA trains
and records its MFU and tokens/s."""

import math

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_the_fused_step_equals_the_readable_one_on_cuda():
    from analysis.gpu_check import EQUAL_RTOL, fused_matches_readable

    checked = fused_matches_readable("micro", "cuda")
    assert checked["max_rel_diff"] <= EQUAL_RTOL, checked


def test_a_bf16_run_on_cuda_trains_and_records_its_mfu(tmp_path):
    from analysis.recording import load_run, scalars
    from analysis.training.loop import train
    from tests.conftest import tiny_config

    result = train(
        tiny_config(
            model="micro", steps=8, device="cuda", precision="bf16-mixed", eval_every=0, eval_tokens=512
        ),
        out=tmp_path / "r",
        progress=False,
    )
    assert math.isfinite(result.final_eval_loss) and result.final_eval_loss < result.first_eval_loss
    frame = load_run(tmp_path / "r")
    assert scalars(frame, "tokens_per_s")["value"].gt(0).all()
    if any(k in torch.cuda.get_device_name() for k in ("H100", "H200", "A100", "L40S", "A10")):
        assert scalars(frame, "mfu")["value"].between(0, 1).all()
