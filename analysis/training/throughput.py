"""How far a run's throughput is from the machine's limit.

Every logged step records its achieved FLOP/s, with FLOPs counted as ``6 N + 12 L h T`` per
token (PaLM's convention, ``toy_models.llama.flops_per_token``). Against a limit:

- on CUDA, MFU: achieved over the GPU's dense bf16 peak from its data sheet (``PEAK_BF16_FLOPS``);
- on CPU, the fraction of a *measured* matmul peak of the same machine: the best of a few
  ``n x n`` matmuls in the run's compute dtype on the run's thread count (a CPU's data-sheet
  peak depends on its vector units, AMX and clocks, which no table here knows). The calibration
  takes about a second and is cached per CPU model, thread count and dtype in the built-data
  cache (``toy_models.paths``), written atomically.

``--precision auto`` on CPU is measured the same way: a few forward + backward passes of the
run's model at its micro-batch in fp32 and in bf16 autocast (the two precisions the tests hold
to each other: bf16-mixed tracks fp32 within 2%), interleaved, best of each; bf16-mixed is
taken when it is at least ``AUTO_MARGIN`` faster (CPUs with AMX bf16, on models large enough
for their matmuls to dominate), else fp32. Cached per CPU model, thread count, model and
micro-batch shape.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

from analysis.provenance import cpu_model
from analysis.recording import RecordingError, read_json, write_atomic
from toy_models.paths import built_data

# dense bf16 peak FLOP/s per GPU by device-name fragment, for MFU (no sparsity); an unknown
# device gets no MFU row
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
CALIBRATION_SIZE = 1024


AUTO_MARGIN = 1.10  # bf16-mixed must be this much faster: noise must not flip the choice
AUTO_ROUNDS = 3


def _cache(name: str) -> Path:
    return built_data() / "cache" / f"{name}.json"


def _cached(name: str, key: str, measure):
    """``measure()`` once per ``key`` in the cache ``name`` (an unwritable cache: every time)."""
    cache = _cache(name)
    table = read_json(cache) or {}
    if key not in table:
        table[key] = measure()
        try:
            write_atomic(cache, json.dumps(table, indent=1))
        except RecordingError as err:  # an unwritable cache costs a measurement per run, never the run
            print(
                f"note: {err}; measured again on every run: set SCALE_LAB_HOME to a writable "
                "directory to keep it",
                file=sys.stderr,
            )
    return table[key]


def measure_matmul_peak(dtype: torch.dtype, n: int = CALIBRATION_SIZE, repeats: int = 5) -> float:
    """The best FLOP/s of ``repeats`` ``n x n`` matmuls (``2 n^3`` FLOPs each) in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm the kernels and the caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def cpu_peak(dtype: torch.dtype) -> float:
    """This machine's measured matmul peak for ``dtype`` at the current thread count (cached)."""
    key = f"{cpu_model()} | {torch.get_num_threads()} threads | {dtype}"
    return float(_cached("matmul_peak", key, lambda: measure_matmul_peak(dtype)))


def step_seconds(model: torch.nn.Module, tokens: torch.Tensor, precision: str) -> float:
    """Wall seconds of one forward + backward of ``model`` on ``tokens`` at ``precision``."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    start = time.perf_counter()
    with autocast:
        loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    return time.perf_counter() - start


def fastest_cpu_precision(model: torch.nn.Module, name: str, micro: int, seq_len: int) -> dict:
    """``{"precision": the pick, "tokens_per_s": {precision: measured}}`` for ``model`` (the
    run's, left untouched: a copy is timed, on inputs from a local generator, so the run's
    random stream is the same whether or not the measurement was cached)."""
    key = f"{cpu_model()} | {torch.get_num_threads()} threads | {name} | {micro}x{seq_len}"

    def measure() -> dict:
        probe = copy.deepcopy(model)
        tokens = torch.randint(
            probe.config.vocab_size, (micro, seq_len), generator=torch.Generator().manual_seed(0)
        )
        candidates = ("fp32", "bf16-mixed")
        for precision in candidates:  # warm each precision's kernels, not counted
            step_seconds(probe, tokens, precision)
        seconds = {precision: [] for precision in candidates}
        for _ in range(AUTO_ROUNDS):  # interleaved: a slow moment of the machine hits both
            for precision in candidates:
                seconds[precision].append(step_seconds(probe, tokens, precision))
        rates = {precision: micro * seq_len / min(s) for precision, s in seconds.items()}
        pick = "bf16-mixed" if rates["bf16-mixed"] >= AUTO_MARGIN * rates["fp32"] else "fp32"
        return {"precision": pick, "tokens_per_s": rates}

    return _cached("auto_precision", key, measure)


def limit(device: torch.device, precision: str) -> tuple[str, float] | None:
    """``(name, FLOP/s)`` of the limit a run on ``device`` at ``precision`` is measured against."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        return None if peak is None else ("mfu", peak)
    if device.type == "cpu":
        dtype = torch.bfloat16 if precision in ("bf16", "bf16-mixed") else torch.float32
        return "cpu_peak_fraction", cpu_peak(dtype)
    return None
