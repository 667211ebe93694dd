"""SCALE's fused step on the CPU: small C++ kernels (``scale_cpu.cpp``, next to this file)
built on first use with ``torch.utils.cpp_extension`` and called as ``torch.ops.scale_lab_cpu``.

Why not Inductor, which writes the CUDA path: on the CPU its outer-loop-fused row rule read a
row, reduced it and updated it, yet ran 1.36x an ``add_`` on the same matrix (60m shapes), and
the column reduction 1.7x; the kernels here sum the squares of row i+1 in the loop that updates
row i (a single stream of ``g`` is latency-bound; two interleaved streams are not), which
brings the hidden rule to the bandwidth of SGD's ``add_``. ``analysis.bench`` measures both.

The build is cached per source, compiler flags and CPU (``-march=native``: a cache moved to
another CPU must not run its instructions), in torch's extension cache
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); about 15 s the first time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("scale_cpu.cpp")
# -ffp-contract=off: no fused multiply-add, so a row's sum does not depend on where the
# compiler chose to contract (a result must not change with the CPU's kernels)
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp")

_LOADED: dict[str, object] = {}


class KernelBuildError(RuntimeError):
    """The C++ kernels could not be built (no compiler, no ninja, a compiler error)."""


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: the CPU's model and instruction-set flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in info.splitlines() if line.split(":")[0].strip() in wanted}))


def build_name() -> str:
    """The extension's name: its cache folder, one per source, flags, CPU and torch."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    for part in (*FLAGS, _cpu_identity(), torch.__version__):
        digest.update(part.encode())
    return f"scale_lab_cpu_{digest.hexdigest()[:12]}"


@contextlib.contextmanager
def _ninja_on_path():
    """torch's extension builder runs ``ninja``; the pip package ``ninja`` puts it in the
    environment's bin folder, which is not on PATH when that environment is not activated."""
    if shutil.which("ninja"):
        yield
        return
    import ninja  # the pip package: its binary's folder

    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + saved
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def is_built() -> bool:
    """Is this source's extension already in torch's extension cache (so loading it builds
    nothing)?"""
    from torch.utils.cpp_extension import _get_build_directory

    name = build_name()
    try:
        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").exists()
    except OSError:
        return False


def kernels():
    """``torch.ops.scale_lab_cpu`` (per_unit_step, per_unit_dim0_step, momentum_per_unit_step, adam_step), built
    and loaded once per process; ``KernelBuildError`` names the cause when the build fails."""
    if "ops" not in _LOADED:
        from torch.utils.cpp_extension import load

        try:
            with _ninja_on_path():
                load(
                    build_name(),
                    [str(SOURCE)],
                    extra_cflags=list(FLAGS),
                    extra_ldflags=["-fopenmp"],
                    is_python_module=False,
                    verbose=False,
                )
        except OSError as error:  # the build directory: read-only, full, missing
            where = os.environ.get("TORCH_EXTENSIONS_DIR") or "~/.cache/torch_extensions"
            raise KernelBuildError(
                f"cannot build in {where} ({error.strerror or error}); set "
                "TORCH_EXTENSIONS_DIR to a writable directory"
            ) from error
        except (RuntimeError, ImportError, ValueError) as error:
            text = str(error).strip()
            lines = (
                [line for line in text.splitlines() if "error" in line.lower()] or text.splitlines() or [""]
            )
            raise KernelBuildError(f"{type(error).__name__}: {lines[0][:300]}") from error
        _LOADED["ops"] = torch.ops.scale_lab_cpu
    return _LOADED["ops"]
