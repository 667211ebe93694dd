"""A transformers ``Trainer`` with a recipe, the instrumentation callback and a TensorBoard
tracker, as a user would write it (notebook 07 shows the same in a notebook)."""

import pytest


def test_a_trainer_with_the_callback_records_and_feeds_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from analysis import build_optimizer
    from analysis.instrument.hf import InstrumentationCallback
    from analysis.instrument.trackers import TensorBoard

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
        )
    )
    opt = build_optimizer("scale", model, lr=1e-3)
    data = [{"input_ids": x, "labels": x} for x in torch.randint(0, 256, (64, 32))]
    args = TrainingArguments(
        "runs/hf-out",
        max_steps=8,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
    )
    callback = InstrumentationCallback("runs/hf-llama", trackers=[TensorBoard("runs/tb")])
    Trainer(
        model=model, args=args, train_dataset=data, optimizers=(opt, None), callbacks=[callback]
    ).train()  # then: tensorboard --logdir runs/tb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from analysis import load_run

    frame = load_run("runs/hf-llama")
    assert frame.step.max() == 8 and {"grad_var", "loss"} <= set(frame.stat)
    tags = EventAccumulator("runs/tb").Reload().Tags()["scalars"]
    assert "grad_var/role/output" in tags and "grad_var/lm_head.weight" in tags
