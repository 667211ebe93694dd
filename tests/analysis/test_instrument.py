import pytest
import torch

from analysis.estimators import per_example_grads
from analysis.instrument import Instrumentation
from analysis.recipes import build_optimizer
from analysis.recording import Recorder, load_run
from analysis.schedule import InstrumentConfig
from analysis.train import train
from analysis import transforms
from tests.conftest import tiny_config


def _one_step(model, optimizer, batch, micro, monitor):
    k = batch.size(0) // micro
    for chunk in batch.split(micro):
        loss = model(input_ids=chunk, labels=chunk).loss
        monitor.micro_batch(1.0 / k, chunk.size(0))
        (loss / k).backward()
    optimizer.step()
    optimizer.zero_grad()


def test_microbatch_estimator_equals_exact_per_example_variance(tiny_model, tmp_path):
    batch = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    exact = per_example_grads(tiny_model, batch)
    optimizer = build_optimizer("scale", tiny_model, lr=1e-3)
    with Recorder(tmp_path / "r") as rec:
        rec.write_config({"config": {"optimizer": "scale"}})
        with Instrumentation(tiny_model, optimizer, rec) as monitor:
            _one_step(tiny_model, optimizer, batch, 2, monitor)
    frame = load_run(tmp_path / "r")
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight"):
        micro = exact[name].double().view(4, 2, -1).mean(1)       # K=4 micro-batches of b=2
        by_hand = (micro - micro.mean(0)).square().sum() / 3
        rows = frame[(frame.param == name) & (frame.stat == "grad_var")]
        assert rows.value.iloc[0] == pytest.approx(by_hand.item(), rel=1e-6)
        rel = frame[(frame.param == name) & (frame.stat == "grad_var_rel")].value.iloc[0]
        assert rel == pytest.approx((by_hand / micro.mean(0).square().sum()).item(), rel=1e-6)


def _no_hooks_left(model, optimizer):
    for p in model.parameters():
        assert not p._backward_hooks
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    assert transforms._tap_listener is None


def test_every_hook_is_removed_on_exit_and_on_exception(tiny_model):
    optimizer = build_optimizer("scale", tiny_model, lr=1e-3)
    with Instrumentation(tiny_model, optimizer, None):
        assert all(p._backward_hooks for p in tiny_model.parameters())
    _no_hooks_left(tiny_model, optimizer)
    with pytest.raises(RuntimeError, match="boom"):
        with Instrumentation(tiny_model, optimizer, None):
            raise RuntimeError("boom")
    _no_hooks_left(tiny_model, optimizer)


def _final_params(run_dir):
    state = torch.load(sorted(run_dir.glob("ckpt-*.pt"))[-1], weights_only=False)
    return state["model"]


@pytest.mark.parametrize("optimizer", ["scale", "adamw"])
def test_instrumentation_does_not_change_training(tmp_path, optimizer):
    probe = InstrumentConfig(every_step=True, probe_at=(2, 4), probe_small=2, probe_large=6,
                             probe_repeats=2)
    base = tiny_config(optimizer=optimizer, micro_batch_size=1)
    off = train(base, out=tmp_path / "off", progress=False)
    on = train(tiny_config(optimizer=optimizer, micro_batch_size=1, instrument=probe),
               out=tmp_path / "on", progress=False)
    assert on.losses == off.losses
    a, b = _final_params(tmp_path / "off"), _final_params(tmp_path / "on")
    assert all(torch.equal(a[k], b[k]) for k in a)
    frame = load_run(tmp_path / "on")
    assert {"grad_var", "probe_var", "update_stable_rank", "update_row_rms_cv"} <= set(frame.stat)
    off_frame = load_run(tmp_path / "off")
    assert off_frame.param.isna().all()                    # off: nothing per-parameter
    assert not (tmp_path / "off" / "spectra.jsonl").exists()


def test_schedule_tiers():
    cfg = InstrumentConfig(cheap_every=10, dense_until=5, rows_every=50, full_every=200,
                           full_at=(1, 30), probe_every=0)
    cheap = [s for s in range(1, 61) if cfg.due("cheap", s, 60)]
    assert cheap == [1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 60]
    assert [s for s in range(1, 400) if cfg.due("full", s, 400)] == [1, 30, 200]
    assert not any(cfg.due("probe", s, 400) for s in range(1, 400))
    with pytest.raises(ValueError, match="cheap_every"):
        InstrumentConfig(cheap_every=0)
