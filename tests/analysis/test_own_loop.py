"""The instrumentation in a user's own loop: inside a transformers Trainer with
gradient accumulation it records what the project's trainer records on the same batches, and
trackers receive every statistic the recording holds."""

import contextlib
import copy
import math
from types import SimpleNamespace

import pytest
import torch

from analysis.instrument import Instrumentation, InstrumentConfig
from analysis.instrument.trackers import DictLogger, TensorBoard
from analysis.optim.recipes import build_optimizer
from analysis.recording import Recorder, load_run
from analysis.training.loop import accumulate
from tests.conftest import tiny_config

STEPS, BATCH, MICRO, SEQ = 3, 4, 1, 16  # 4 micro-batches: the trainer cuts none further
EVERY_STEP = InstrumentConfig(every_step=True)


def _batches():
    return torch.randint(0, 64, (STEPS, BATCH, SEQ), generator=torch.Generator().manual_seed(1))


def _project_trainer_rows(model, tmp_path):
    """The project's trainer on these batches: its ``accumulate`` (token-weighted micro-batches
    announced to the monitor), then the optimizer step."""
    opt = build_optimizer("scale", model, lr=1e-2)
    config = tiny_config(instrument=EVERY_STEP, batch_size=BATCH, seq_len=SEQ)
    run = SimpleNamespace(
        config=config,
        accum=BATCH // MICRO,
        world=1,
        train_model=model,
        device=torch.device("cpu"),
        autocast=contextlib.nullcontext,
        step_tokens=lambda: BATCH * (SEQ - 1),
    )
    with (
        Recorder(tmp_path / "ours") as rec,
        Instrumentation(model, opt, rec, EVERY_STEP, last_step=STEPS) as monitor,
    ):
        for batch in _batches():
            accumulate(run, batch.view(BATCH // MICRO, MICRO, SEQ), monitor)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return load_run(tmp_path / "ours")


def _trainer_rows(model, tmp_path):
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    from analysis.instrument.hf import InstrumentationCallback

    class InOrder(torch.utils.data.IterableDataset):
        def __iter__(self):
            for seq in _batches().reshape(-1, SEQ):
                yield {"input_ids": seq, "labels": seq}

    opt = build_optimizer("scale", model, lr=1e-2)
    constant = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=STEPS,
        use_cpu=True,
        per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=BATCH // MICRO,
        max_grad_norm=0.0,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
    )
    callback = InstrumentationCallback(tmp_path / "trainer", EVERY_STEP)
    Trainer(
        model=model, args=args, train_dataset=InOrder(), optimizers=(opt, constant), callbacks=[callback]
    ).train()
    return load_run(tmp_path / "trainer")


def test_hf_trainer_with_accumulation_records_the_project_trainers_gradient_variance(tiny_model, tmp_path):
    ours = _project_trainer_rows(copy.deepcopy(tiny_model), tmp_path)
    theirs = _trainer_rows(copy.deepcopy(tiny_model), tmp_path)
    for stat in ("grad_var", "grad_norm", "update_rms"):
        a = ours[ours.stat == stat].set_index(["step", "param"]).value.sort_index()
        b = theirs[theirs.stat == stat].set_index(["step", "param"]).value.sort_index()
        assert len(a) == STEPS * len(list(tiny_model.parameters())) and a.index.equals(b.index), stat
        assert ((a - b).abs() <= 1e-6 * a.abs() + 1e-12).all(), (stat, (a - b).abs().max())
    assert ours[ours.stat == "grad_var"].value.gt(0).all()


def test_trackers_receive_every_per_layer_statistic(tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    calls = []
    trackers = [TensorBoard(tmp_path / "tb"), DictLogger(lambda d, step: calls.append((step, d)))]
    opt = build_optimizer("scale", tiny_model, lr=1e-2)
    with (
        Recorder(tmp_path / "run", trackers=trackers) as rec,
        Instrumentation(tiny_model, opt, rec, EVERY_STEP, last_step=STEPS) as monitor,
    ):
        for batch in _batches():
            for micro in batch.chunk(BATCH // MICRO):
                monitor.micro_batch(0.5, len(micro))
                (0.5 * tiny_model(input_ids=micro, labels=micro).loss).backward()
            opt.step()
            opt.zero_grad()
    recorded = load_run(tmp_path / "run").query("stat == 'grad_var'")
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    for row in recorded.itertuples():
        tag = f"grad_var/{row.param}"
        assert tag in tags
        value = next(e.value for e in events.Scalars(tag) if e.step == row.step)
        assert math.isclose(value, row.value, rel_tol=1e-6)  # float32 in the event file
        logged = next(d for step, d in calls if step == row.step and tag in d)
        assert logged[tag] == row.value
    by_role = recorded.groupby(["step", "role"]).value.mean()
    for (step, role), mean in by_role.items():
        value = next(e.value for e in events.Scalars(f"grad_var/role/{role}") if e.step == step)
        assert math.isclose(value, mean, rel_tol=1e-6)
    assert any(t.startswith("grad_row_rms/") for t in events.Tags()["histograms"])


def test_the_callback_weights_a_micro_batch_by_its_predicted_tokens():
    """Padding (-100) makes micro-batches unequal: the factor is this micro-batch's predicted
    tokens over the Trainer's ``num_items_in_batch``; without it, 1 / accumulation steps."""
    from analysis.instrument.hf import InstrumentationCallback

    callback, seen = InstrumentationCallback("unused"), []
    callback.monitor = SimpleNamespace(micro_batch=lambda w, n: seen.append((w, n)))
    labels = torch.tensor([[1, 2, -100, -100], [3, 4, 5, 6]])  # shifted: 1 + 3 predicted
    callback._announce(
        torch.nn.Linear(1, 1),
        (),
        {"input_ids": labels, "labels": labels, "num_items_in_batch": torch.tensor(10)},
    )
    callback._accumulation = 4
    callback._announce(torch.nn.Linear(1, 1), (), {"input_ids": labels})
    assert seen == [(0.4, 2), (0.25, 2)]


def test_the_trainer_sends_its_recording_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from analysis.training.cli import main

    assert (
        main(
            [
                "--model",
                "nano",
                "--steps",
                "3",
                "--batch_size",
                "4",
                "--micro_batch_size",
                "2",
                "--seq_len",
                "32",
                "--eval_every",
                "3",
                "--eval_tokens",
                "256",
                "--instrument",
                "--no-progress",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "run"),
                "--tensorboard",
                str(tmp_path / "tb"),
            ]
        )
        == 0
    )
    recorded = load_run(tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    losses = [e.value for e in events.Scalars("loss")]
    assert losses == pytest.approx(recorded.query("stat == 'loss'").sort_values("step").value.tolist())
    assert "grad_var/lm_head.weight" in events.Tags()["scalars"]
