"""How far a run's throughput is from the machine's limit.

Every logged step records its achieved FLOP/s, with FLOPs counted as ``6 N + 12 L h T`` per
token (PaLM's convention, ``toy_models.llama.flops_per_token``). Against a limit:

- on CUDA, MFU: achieved over the GPU's dense bf16 peak from its data sheet (``PEAK_BF16_FLOPS``);
- on CPU, the fraction of a *measured* matmul peak of the same machine: the best of a few
  ``n x n`` matmuls in the run's compute dtype on the run's thread count (a CPU's data-sheet
  peak depends on its vector units, AMX and clocks, which no table here knows). The calibration
  takes about a second and is cached per CPU model, thread count and dtype in the built-data
  cache (``toy_models.paths``), written atomically.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from analysis.recording import read_json, write_atomic
from toy_models.paths import built_data

# dense bf16 peak FLOP/s per GPU by device-name fragment, for MFU (no sparsity); an unknown
# device gets no MFU row
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
CALIBRATION_SIZE = 1024


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache() -> Path:
    return built_data() / "cache" / "matmul_peak.json"


def measure_matmul_peak(dtype: torch.dtype, n: int = CALIBRATION_SIZE, repeats: int = 5) -> float:
    """The best FLOP/s of ``repeats`` ``n x n`` matmuls (``2 n^3`` FLOPs each) in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b   # warm the kernels and the caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def cpu_peak(dtype: torch.dtype) -> float:
    """This machine's measured matmul peak for ``dtype`` at the current thread count (cached)."""
    key = f"{cpu_model()} | {torch.get_num_threads()} threads | {dtype}"
    cache = _cache()
    table = read_json(cache) or {}
    if key not in table:
        table[key] = measure_matmul_peak(dtype)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(cache, json.dumps(table, indent=1))
        except Exception:   # an unwritable cache costs a second per run, never the run
            pass
    return float(table[key])


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
