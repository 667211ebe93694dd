import pytest
import torch

from analysis.instrument.estimators import per_example_grads
from analysis.instrument.hooks import Instrumentation
from analysis.instrument.schedule import InstrumentConfig
from analysis.optim.recipes import build_optimizer
from analysis.recording import Recorder, load_run
from analysis.training import train
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
        micro = exact[name].double().view(4, 2, -1).mean(1)  # K=4 micro-batches of b=2
        by_hand = (micro - micro.mean(0)).square().sum() / 3
        rows = frame[(frame.param == name) & (frame.stat == "grad_var")]
        assert rows.value.iloc[0] == pytest.approx(by_hand.item(), rel=1e-6)
        rel = frame[(frame.param == name) & (frame.stat == "grad_var_rel")].value.iloc[0]
        assert rel == pytest.approx((by_hand / micro.mean(0).square().sum()).item(), rel=1e-6)


def _no_hooks_left(model, optimizer):
    for p in model.parameters():
        assert not p._backward_hooks
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    assert not optimizer._tap_hooks


def test_two_instrumented_optimizers_each_record_only_their_own(tmp_path):
    """The tap listener belongs to its optimizer: with two instrumented optimizers alive at
    once, each monitor hears its own optimizer's taps (with a module-global listener the
    second monitor took the first optimizer's taps, and the first run lost its momentum row)."""
    from toy_models.llama import build_model, load_config

    config = load_config(
        "nano",
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    models = [build_model(config, seed=s) for s in (0, 1)]
    optimizers = [build_optimizer("scale", m, lr=1e-2) for m in models]
    batch = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    recorders = [Recorder(tmp_path / f"r{i}") for i in (0, 1)]
    for i, rec in enumerate(recorders):
        rec.write_config({"config": {"optimizer": "scale", "seed": i}})
    with (
        Instrumentation(models[0], optimizers[0], recorders[0]) as first,
        Instrumentation(models[1], optimizers[1], recorders[1]) as second,
    ):
        for model, opt, monitor in zip(models, optimizers, (first, second)):
            _one_step(model, opt, batch, 2, monitor)
    for rec in recorders:
        rec.close()
    for i in (0, 1):
        frame = load_run(tmp_path / f"r{i}")
        head = frame[frame.param == "lm_head.weight"].set_index("stat")["value"]
        assert "momentum_grad_cos" in head.index  # heard from its own momentum tap
        assert head["update_rms"] == pytest.approx(1.0, rel=1e-4)  # SCALE: unit-RMS rows
    for opt in optimizers:
        assert not opt._tap_hooks


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
    probe = InstrumentConfig(every_step=True, probe_at=(2, 4), probe_small=2, probe_large=6, probe_repeats=2)
    # an instrumented run takes the readable step: the same path as --no-fused
    base = tiny_config(optimizer=optimizer, micro_batch_size=1, fused=False)
    off = train(base, out=tmp_path / "off", progress=False)
    on = train(
        tiny_config(optimizer=optimizer, micro_batch_size=1, instrument=probe),
        out=tmp_path / "on",
        progress=False,
    )
    assert on.losses == off.losses
    a, b = _final_params(tmp_path / "off"), _final_params(tmp_path / "on")
    assert all(torch.equal(a[k], b[k]) for k in a)
    frame = load_run(tmp_path / "on")
    assert {"grad_var", "probe_var", "update_stable_rank", "update_row_rms_cv"} <= set(frame.stat)
    off_frame = load_run(tmp_path / "off")
    assert off_frame.param.isna().all()  # off: nothing per-parameter
    assert not (tmp_path / "off" / "spectra.jsonl").exists()


def test_schedule_tiers():
    cfg = InstrumentConfig(
        cheap_every=10, dense_until=5, rows_every=50, full_every=200, full_at=(1, 30), probe_every=0
    )
    cheap = [s for s in range(1, 61) if cfg.due("cheap", s, 60)]
    assert cheap == [1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 60]
    assert [s for s in range(1, 400) if cfg.due("full", s, 400)] == [1, 30, 200]
    assert not any(cfg.due("probe", s, 400) for s in range(1, 400))
    with pytest.raises(ValueError, match="cheap_every"):
        InstrumentConfig(cheap_every=0)


def test_every_statistic_a_run_records_has_its_meaning_documented(tmp_path):
    """Every name an instrumented run writes (every tier due, per head, the probe, clipping on)
    is defined in ``analysis.instrument.stat_names``, the recordings' one documentation."""
    from analysis.instrument import stat_names
    from analysis.recording import load_run

    everything = InstrumentConfig(
        every_step=True, per_head=True, probe_at=(2,), probe_small=2, probe_large=6, probe_repeats=2
    )
    config = tiny_config(steps=3, micro_batch_size=1, instrument=everything, grad_clip=1.0)
    train(config, out=tmp_path / "run", progress=False)
    recorded = set(load_run(tmp_path / "run").stat) | set(load_run(tmp_path / "run", "spectra").stat)
    undocumented = sorted(s for s in recorded if stat_names.meaning(s) is None)
    assert not undocumented, f"statistics without a meaning in stat_names: {undocumented}"
    assert {"probe_var", "grad_var_head", "update_row_rms_cv", "update_spectrum", "grad_clipped"} <= recorded
    assert stat_names.meaning("no_such_stat") is None
