"""Where and with what a run ran: git SHA (and whether the tree was dirty), package versions,
host, CPU model and thread count, written into every run record (``config.json``, each
segment of ``segments.jsonl``). Imports nothing of ours."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "numpy", "pandas", "scale-lab")


def provenance() -> dict:
    """Git SHA (and whether the tree is dirty), package versions, host, CPU and threads."""
    root = Path(__file__).resolve().parent.parent
    info: dict = {
        "python": platform.python_version(),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        info["git_sha"], info["git_dirty"] = sha or None, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        info["git_sha"], info["git_dirty"] = None, None
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info["versions"] = versions
    info["cpu"] = cpu_model()
    info["threads"] = _threads()
    return info


def cpu_model() -> str | None:
    """The CPU's model name and the vector extensions its kernels may use (AVX-512, AMX):
    floating-point results can differ between CPUs, so a record names the one it ran on."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    extensions = [f for f in ("avx2", "avx512f", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(extensions) or 'no AVX2'})"


def _threads() -> int | None:
    """torch's intra-op thread count, when torch is loaded (results can depend on it)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
