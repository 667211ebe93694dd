"""What the trainer measures besides the training loss: validation loss on a fixed token
budget, the step-0 evaluation of a resumed run, and the hardware rows (peak memory, MFU).

MFU = achieved FLOP/s / (world size x the GPU's dense bf16 peak), with achieved FLOPs counted
as ``6 N + 12 L h T`` per token (``toy_models.llama.flops_per_token``).
"""

from __future__ import annotations

import math

import torch

from analysis.recording import RecordingError, load_run, scalars
from analysis.training.config import TrainConfig


def recorded_value(run_dir, stat: str, step: int) -> float:
    """A run-level statistic a resumed run recorded at ``step`` before it stopped (nan if
    none)."""
    if run_dir is None:
        return math.nan
    try:
        rows = scalars(load_run(run_dir), stat)
    except RecordingError:  # a run directory without metrics: nothing recorded yet
        return math.nan
    rows = rows[rows["step"] == step]
    return float(rows["value"].iloc[-1]) if len(rows) else math.nan


def recorded_first_eval(run_dir) -> float:
    """The step-0 validation loss a resumed run recorded before it stopped (nan if none)."""
    return recorded_value(run_dir, "eval_loss", 0)


def hardware_stats(
    device: torch.device, flops_per_s: float, world: int, limit: tuple[str, float] | None
) -> dict:
    """Achieved FLOP/s per process (``6 N + 12 L h T`` per token) and its share of ``limit``
    (``analysis.training.throughput``: MFU on CUDA over ``world`` GPUs, the measured matmul peak's
    fraction on CPU); on CUDA also the peak memory since the last call."""
    stats = {"flops_per_s": flops_per_s / world}
    if limit is not None:
        name, peak = limit
        stats[name] = flops_per_s / (world * peak)
    if device.type == "cuda":
        stats |= {
            "memory_allocated_peak_gb": torch.cuda.max_memory_allocated(device) / 1e9,
            "memory_reserved_peak_gb": torch.cuda.max_memory_reserved(device) / 1e9,
        }
    return stats


def token_loss(model, batch: torch.Tensor, autocast) -> tuple[torch.Tensor, int]:
    """Mean next-token loss of a packed batch and the number of predicted tokens."""
    with autocast():
        loss = model(input_ids=batch, labels=batch).loss
    return loss, batch.size(0) * (batch.size(1) - 1)


@torch.no_grad()
def evaluate(model, data, config: TrainConfig, device, autocast, rank=0, world=1) -> float:
    """Token-weighted mean validation loss over the fixed budget (no n+1 bias).

    Batch ``i`` goes to rank ``i % world``. Every rank runs the same number of forwards (FSDP2
    gathers parameters in each one): in a last, short round a rank without a batch of its own
    repeats one and counts nothing."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    batches = iter(data.validation_batches(config.micro(world), config.eval_budget()))
    while True:
        round_ = [b for _, b in zip(range(world), batches)]
        if not round_:
            break
        has_batch = rank < len(round_)
        loss, n = token_loss(model, round_[rank if has_batch else 0].to(device), autocast)
        if has_batch:
            total += torch.tensor([loss.double().item() * n, n], dtype=torch.float64, device=device)
    if world > 1:
        torch.distributed.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()
