"""Train a LLaMA with any recipe: ``train(config) -> TrainResult``.

The loop, top to bottom, per optimizer step ``s`` (0-based; the recorded step is ``s + 1``):

1. global batch ``s`` (``toy_models.data``) is cut into ``world_size x accum`` micro-batches;
   this process takes its ``accum`` of them;
2. each micro-batch's mean token loss is weighted by ``its tokens / the step's tokens`` (times
   the world size, which DDP's gradient averaging divides out), so the accumulated gradient
   is the gradient of the step's token-mean loss whatever the split;
3. with ``grad_clip``, the gradient is scaled to that global L2 norm when it is larger
   (``torch.nn.utils.clip_grad_norm_``'s rule; the norm before clipping is recorded as
   ``grad_norm`` and whether it clipped as ``grad_clipped``);
   ``optimizer.step()``, then the scheduler: linear warmup ``(s+1)/warmup``, then cosine from
   1 to ``min_lr_ratio`` at the last step, multiplying every group's own peak lr (so the
   vectors' ``adam_lr`` follows the same shape);
4. every ``eval_every`` steps, at step 0 and at the end: token-weighted validation loss
   ``sum(token losses) / tokens`` over a fixed token budget, and its perplexity.

The same code runs single-process and under ``torchrun``: DDP (``no_sync`` on non-final
micro-steps) or FSDP2 (``--parallel fsdp``: ``fully_shard`` per block, the optimizer on row
shards; see ``analysis.training.parallel``). On CPU a fixed seed gives bitwise-identical runs.

``train`` reads as the loop above; each part is a named function that tests can call:
``setup`` (``analysis.training.setup``), ``micro_batches``, ``accumulate``, ``grad_norm_of``,
``stop_diverged`` and ``clip_if_asked``, ``log_step``, ``evaluate_if_due``, ``checkpoint_if_due``, ``stop_if_interrupted`` and ``finish``.

SIGINT (Ctrl-C) and SIGTERM (a cluster's preemption) let the current step finish, write a
checkpoint and raise ``TrainingInterrupted`` (exit code 130 or 143 from the CLI); a second
signal acts as usual.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

import analysis.training.checkpoint as checkpoint
import analysis.training.parallel as parallel
from analysis.instrument.hooks import Instrumentation
from analysis.optim.inspection import state_bytes
from analysis.recording import RESULT_KEYS, RecordingError
from analysis.training.config import TrainConfig
from analysis.training.evaluation import (
    evaluate,
    hardware_stats,
    recorded_first_eval,
    recorded_value,
    token_loss,
)
from analysis.training.setup import Run, setup
from analysis.training.stopping import TrainingDiverged, TrainingInterrupted, interrupt_requests


@dataclass
class TrainResult:
    """What ``train`` returns (and ``result.json`` holds, less ``losses``)."""

    run_dir: Path | None
    steps: int
    first_eval_loss: float
    final_eval_loss: float
    final_perplexity: float
    final_train_loss: float
    tokens: int  # read over the whole run (every segment's steps)
    tokens_per_s: float
    optimizer_state_bytes: int
    vocab_size: int
    losses: list[float]


def instrumentation(run: Run):
    """The run's ``Instrumentation`` when its config asks for one, else a no-op context."""
    if run.config.instrument is None:
        return contextlib.nullcontext()
    note = Instrumentation.variance_note(run.accum, run.micro, run.world)
    if note and run.rank == 0:
        print(f"note: {note}", file=sys.stderr)
    return Instrumentation(
        run.model,
        run.optimizer,
        run.recorder or None,
        run.config.instrument,
        last_step=run.config.steps,
        autocast=run.autocast,
        # the probe and token counts sample finite data; not a stream
        data=run.data if hasattr(run.data, "train") else None,
        rank=run.rank,
        world_size=run.world,
        start_step=run.start,
    )


def run_evaluation(run: Run) -> float:
    """Token-weighted validation loss of the model now (``analysis.training.evaluation``)."""
    return evaluate(run.model, run.data, run.config, run.device, run.autocast, run.rank, run.world)


def initial_evaluation(run: Run) -> float:
    """The step-0 validation loss: measured and recorded on a fresh run, read back on a resume."""
    if run.start != 0:
        return recorded_first_eval(run.run_dir)
    loss = run_evaluation(run)
    run.recorder.log(0, {"eval_loss": loss, "eval_perplexity": math.exp(loss)})
    return loss


def micro_batches(run: Run, step: int) -> torch.Tensor:
    """This process's ``accum`` micro-batches of global batch ``step``: ``(accum, micro, T)``."""
    batch = run.data.local_batch(step, run.config.batch_size, run.rank, run.world)
    return batch.view(run.accum, run.micro, -1)


def accumulate(run: Run, local: torch.Tensor, monitor) -> float:
    """Forward and backward over this process's micro-batches ``local``; gradients accumulate
    in ``.grad``. Returns the step's token-mean loss over all processes.

    Each micro-batch's mean loss is weighted by its share of the step's predicted tokens
    (times the world size, which DDP's averaging divides out). On a step the instrumentation
    records, each micro-batch is cut into ``monitor.pieces`` parts (the variance estimate needs
    several; ``analysis.instrument.hooks``)."""
    config, accum = run.config, run.accum
    pieces = monitor.pieces(accum, local.size(1)) if config.instrument is not None else 1
    step_loss = torch.zeros((), dtype=torch.float64, device=run.device)
    for k in range(accum):
        parts = local[k].to(run.device).chunk(pieces)
        for j, mb in enumerate(parts):
            last = k == accum - 1 and j == len(parts) - 1
            with parallel.gradient_sync(run.train_model, config.parallel, run.world, last):
                loss, n = token_loss(run.train_model, mb, run.autocast)
                weight = n * run.world / run.step_tokens()
                if config.instrument is not None:
                    monitor.micro_batch(weight, mb.size(0))
                (loss * weight).backward()
            step_loss += loss.detach().double() * n
    if run.world > 1:
        torch.distributed.all_reduce(step_loss)
    return (step_loss / run.step_tokens()).item()


def grad_norm_of(run: Run, mean_loss: float) -> float:
    """The global gradient norm (over every process), or NaN when the loss already is not
    finite (the norm would only repeat it)."""
    return parallel.global_grad_norm(run.model) if math.isfinite(mean_loss) else math.nan


def stop_diverged(run: Run, step: int, mean_loss: float, grad_norm: float, first_eval: float) -> None:
    """Record the run as diverged at ``step`` (a finished result, not a crash: the sweep
    moves on) and raise ``TrainingDiverged`` with the one line the CLI prints."""
    what = (
        f"loss {mean_loss}"
        if not math.isfinite(mean_loss)
        else f"gradient norm {grad_norm} (loss {mean_loss:.4g})"
    )
    run.recorder.log(step, {"loss": mean_loss, "grad_norm": grad_norm})
    run.recorder.finish(
        {
            "diverged_at": step,
            "steps": run.config.steps,
            "first_eval_loss": first_eval,
            "final_eval_loss": math.nan,
            "final_perplexity": math.nan,
        },
        required=RESULT_KEYS,
    )
    raise TrainingDiverged(
        f"non-finite {what} at step {step}; lower the learning rate (the last good checkpoint is kept)"
    )


def clip_if_asked(run: Run, grad_norm: float) -> dict:
    """With ``grad_clip``: clip the step's gradient to that global norm (``grad_norm`` is its
    norm before clipping) and return the row ``{"grad_clipped": 1.0 or 0.0}``; else {}."""
    if run.config.grad_clip is None:
        return {}
    return {"grad_clipped": float(parallel.clip_gradients(run.model, run.config.grad_clip, grad_norm))}


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr/<group label>": lr}`` for every parameter group, as used by the coming step."""
    return {f"lr/{g.get('label', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}


def log_step(run: Run, done: int, row: dict) -> None:
    """Record step ``done``'s run-level row (every ``log_every`` steps and the last)."""
    if done % run.config.log_every == 0 or done == run.config.steps:
        run.recorder.log(done, row)


def evaluate_if_due(run: Run, done: int) -> float | None:
    """Every ``eval_every`` steps and at the last: validation loss, recorded; else None."""
    config = run.config
    if not ((config.eval_every and done % config.eval_every == 0) or done == config.steps):
        return None
    loss = run_evaluation(run)
    run.recorder.log(done, {"eval_loss": loss, "eval_perplexity": math.exp(loss)})
    return loss


def save_checkpoint(run: Run, done: int) -> Path | None:
    """Gather (a collective) and save on rank 0; the checkpoint's path (None off rank 0)."""
    states = checkpoint.gather(run.model, run.optimizer, run.data, run.sharded, run.world)
    if run.rank != 0:
        return None
    return checkpoint.save(
        run.run_dir,
        done,
        *states,
        run.scheduler,
        run.identity,
        {"tokens_seen": run.tokens_seen(done)},
        keep=run.config.keep_checkpoints,
    )


def checkpoint_if_due(run: Run, done: int) -> None:
    """Every ``save_every`` steps and at the last: ``save_checkpoint``."""
    config = run.config
    if run.run_dir is not None and (
        (config.save_every and done % config.save_every == 0) or done == config.steps
    ):
        save_checkpoint(run, done)


def stop_if_interrupted(run: Run, done: int, received: list[int]) -> None:
    """After step ``done``: when a signal arrived (on any process), checkpoint and raise
    ``TrainingInterrupted`` with the one line the CLI prints."""
    signum = received[0] if received else 0
    if run.world > 1:  # every process stops at the same step, or the collectives hang
        flag = torch.tensor([signum], device=run.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        signum = int(flag.item())
    if not signum:
        return
    where = "no run directory, nothing saved"
    if run.run_dir is not None:
        path = save_checkpoint(run, done)
        where = f"checkpoint {path or run.run_dir}; continue with --resume"
    raise TrainingInterrupted(f"interrupted at step {done}; {where}", 128 + signum)


def finish(
    run: Run, first_eval: float, eval_loss: float, losses: list[float], tokens_per_s: float
) -> TrainResult:
    """The result; written as ``result.json`` (which marks the run finished). A run resumed
    from its final checkpoint (killed before it wrote its result) trains no step: its last
    training loss and throughput are the ones it recorded."""
    last = run.config.steps
    if not losses:
        losses = [recorded_value(run.run_dir, "loss", last)]
        tokens_per_s = recorded_value(run.run_dir, "tokens_per_s", last)
    result = TrainResult(
        run_dir=run.run_dir,
        steps=run.config.steps,
        first_eval_loss=first_eval,
        final_eval_loss=eval_loss,
        final_perplexity=math.exp(eval_loss),
        final_train_loss=losses[-1],
        tokens=run.tokens_seen(run.config.steps),
        tokens_per_s=tokens_per_s,
        optimizer_state_bytes=state_bytes(run.optimizer),
        vocab_size=run.model.config.vocab_size,
        losses=losses,
    )
    # the run directory is where the file is: never an absolute path of the machine in the record
    run.recorder.finish(
        {k: v for k, v in asdict(result).items() if k not in ("losses", "run_dir")}, required=RESULT_KEYS
    )
    return result


def train(
    config: TrainConfig,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    allow_change: bool = False,
    trackers: dict | None = None,
) -> TrainResult:
    """Train ``config``; with ``out``, record into that run directory (``analysis.recording``).

    ``overwrite`` replaces an existing run directory, ``resume`` continues it from its newest
    checkpoint (``allow_change`` lets it change an experiment setting, recorded in
    ``segments.jsonl``); ``progress`` shows a progress bar on rank 0. Raises ``ConfigError``
    for bad settings, ``TrainingDiverged`` when the loss or gradient becomes non-finite and
    ``TrainingInterrupted`` after SIGINT or SIGTERM. ``trackers``: also send every recorded
    statistic to ``{"tensorboard": DIR, "wandb": PROJECT, "trackio": PROJECT}``
    (``analysis.instrument.trackers``)."""
    run = setup(config, out, overwrite, resume, allow_change, trackers)
    failure = None
    try:
        return _loop(run, progress)
    except RecordingError as err:  # a failed write: say what can be resumed
        failure = f"{err}; {checkpoint.advice(run.run_dir)}"
        raise
    finally:  # the lock and files are given back however the loop ends, in one line
        try:
            note = run.close()
        except RecordingError as err:  # closing a table failed after the loop ended
            failure, note = failure or f"{err}; {checkpoint.advice(run.run_dir)}", ""
        if failure is not None:
            raise RecordingError(failure + (f"; {note}" if note else "")) from None
        if note:
            print(f"note: {note}", file=sys.stderr)


def _loop(run: Run, progress: bool) -> TrainResult:
    """The loop of ``train`` (the module docstring) on a run that ``setup`` made."""
    config = run.config
    first_eval = eval_loss = initial_evaluation(run)
    losses, tokens_per_s = [], 0.0
    bar = (
        tqdm(
            total=config.steps,
            initial=run.start,
            desc=f"{config.optimizer} {config.model}",
            unit="step",
            dynamic_ncols=True,
        )
        if progress and run.rank == 0
        else None
    )
    with instrumentation(run) as monitor, interrupt_requests() as received:
        for step in range(run.start, config.steps):
            t0 = time.perf_counter()
            local = micro_batches(run, step)
            data_time = time.perf_counter() - t0
            mean_loss = accumulate(run, local, monitor)
            grad_norm = grad_norm_of(run, mean_loss)
            if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
                stop_diverged(run, step + 1, mean_loss, grad_norm, first_eval)
            clipped = clip_if_asked(run, grad_norm)
            # the lrs this step uses, read before scheduler.step() moves them on
            lr, lrs = run.optimizer.param_groups[0]["lr"], group_lrs(run.optimizer)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            if run.device.type == "cuda":
                torch.cuda.synchronize()
            step_time = time.perf_counter() - t0
            tokens_per_s = config.batch_size * config.seq_len / step_time
            losses.append(mean_loss)
            done = step + 1
            log_step(
                run,
                done,
                {
                    "loss": mean_loss,
                    "lr": lr,
                    **lrs,
                    "grad_norm": grad_norm,
                    **clipped,
                    "tokens_per_s": tokens_per_s,
                    "step_time": step_time,
                    "data_time": data_time,
                    "tokens": run.tokens_seen(done),
                    **hardware_stats(run.device, tokens_per_s * run.flops_per_token, run.world, run.limit),
                },
            )
            evaluated = evaluate_if_due(run, done)
            eval_loss = eval_loss if evaluated is None else evaluated
            checkpoint_if_due(run, done)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            if done < config.steps:
                stop_if_interrupted(run, done, received)
    if bar is not None:
        bar.close()
    if run.start >= config.steps:  # resumed from the final checkpoint: evaluate what it holds
        eval_loss = run_evaluation(run)
    return finish(run, first_eval, eval_loss, losses, tokens_per_s)
