"""The instrumentation inside a transformers ``Trainer``, in one line:

    Trainer(model, args, train_dataset=..., optimizers=(opt, None),
            callbacks=[InstrumentationCallback("runs/my-run")])

``InstrumentationCallback`` opens a ``Recorder`` (on the main process) and an
``Instrumentation`` around the Trainer's model and optimizer when training begins, and closes
them when it ends. Gradient accumulation is measured as the project's trainer measures it:
a forward pre-hook announces every training micro-batch with the factor the Trainer scales its
mean loss by, which the gradient hooks divide out (``Instrumentation.micro_batch``):

- the model reduces its loss over ``num_items_in_batch`` (causal LMs in transformers >= 4.46:
  ``loss_k = sum of token losses / N``): the factor is ``n_k / N``, ``n_k`` the micro-batch's
  predicted tokens (shifted labels not -100);
- otherwise the Trainer divides each micro-batch's loss by the accumulation steps: ``1 / K``.

So the per-layer gradient variance across micro-batches is the variance of the micro-batch
mean gradients, whatever the split, and equals the project trainer's on the same batches.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from analysis.instrument.hooks import Instrumentation
from analysis.instrument.schedule import InstrumentConfig
from analysis.recording import Recorder


def _unwrapped(optimizer):
    """The optimizer inside accelerate's ``AcceleratedOptimizer`` (its hooks are the inner's)."""
    return getattr(optimizer, "optimizer", optimizer)


class InstrumentationCallback(TrainerCallback):
    """Record a Trainer's run into ``run_dir`` (``analysis.recording``), on schedule ``config``,
    with a user's role ``rules`` (default: the optimizer's, see ``Instrumentation``) and
    ``trackers`` that also receive every row (``analysis.instrument.trackers``)."""

    def __init__(self, run_dir: str | Path, config: InstrumentConfig | None = None, rules=None, trackers=()):
        self.run_dir, self.config, self.rules, self.trackers = Path(run_dir), config, rules, trackers
        self.recorder: Recorder | None = None
        self.monitor: Instrumentation | None = None
        self._hook = None
        self._accumulation = 1

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            raise ValueError(
                "InstrumentationCallback needs the Trainer's model and optimizer; "
                "add it with Trainer(callbacks=[...]), not after training starts"
            )
        main = state.is_world_process_zero
        self.recorder = Recorder(self.run_dir, trackers=self.trackers) if main else None
        self._accumulation = args.gradient_accumulation_steps
        self.monitor = Instrumentation(
            model,
            _unwrapped(optimizer),
            self.recorder,
            self.config,
            last_step=state.max_steps,
            rank=args.process_index,
            world_size=args.world_size,
            start_step=state.global_step,
            rules=self.rules,
        )
        self.monitor.__enter__()
        self._hook = model.register_forward_pre_hook(self._announce, with_kwargs=True)

    def _announce(self, module, args, kwargs):
        """Before each training forward: the micro-batch's loss factor and sequence count."""
        if not module.training or self.monitor is None:
            return None
        labels = kwargs.get("labels")
        ids = kwargs.get("input_ids", args[0] if args else None)
        sequences = len(ids) if ids is not None else 1
        total = kwargs.get("num_items_in_batch")
        if labels is not None and total is not None:
            predicted = (labels[..., 1:] != -100).sum()
            weight = float(predicted) / float(total)
        else:
            weight = 1.0 / self._accumulation
        self.monitor.micro_batch(weight, sequences)
        return None

    def on_log(self, args, state, control, logs=None, **kwargs):
        """The Trainer's logged training and evaluation losses, as the trainer records them."""
        found = {
            ours: logs[theirs]
            for theirs, ours in (("loss", "loss"), ("eval_loss", "eval_loss"))
            if logs and theirs in logs
        }
        if found and self.recorder is not None:
            self.recorder.log(state.global_step, found)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Remove every hook and close the recording (idempotent)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.monitor is not None:
            self.monitor.__exit__(None, None, None)
            self.monitor = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
