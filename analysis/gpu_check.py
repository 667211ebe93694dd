"""``scale-lab bench gpu``: the GPU paths checked in one command, into one JSON file.

1. **Fused equals readable**: SCALE's fused step (``analysis.optim.fused``: Triton on CUDA,
   Inductor on CPU) against the readable chains on the same gradients for ``STEPS_EQUAL``
   steps; the largest relative parameter difference (float32 with another rounding order:
   ``EQUAL_RTOL``).
2. **A short run per arm** (SCALE and AdamW) through the trainer at the device's precision:
   tokens/s over the steady steps, MFU on CUDA (achieved FLOP/s over the data-sheet bf16 peak;
   on CPU the fraction of the measured matmul peak, ``analysis.training.throughput``), and on CUDA
   the peak allocated memory beside the dry run's prediction (``analysis.training.dryrun``).
3. **The CUDA-only tests** (``CUDA_TESTS``, skipped without a GPU), run by pytest: their summary
   line and exit code.

On a GPU: ``scale-lab bench gpu --out gpu.json`` (60m, bf16, a few minutes). ``--device cpu
--smoke`` runs the same code on CPU with ``nano`` and a few steps, without the tests (the suite
runs it, so the script cannot rot while no GPU is lent).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from analysis.arguments import Parser, output_file
from analysis.optim.recipes import build_optimizer
from analysis.recording import load_run, scalars, write_atomic
from analysis.training.config import ConfigError, TrainConfig
from analysis.training.dryrun import plan
from analysis.training.loop import train
from toy_models.llama import build_model, load_config

STEPS_EQUAL = 5
EQUAL_RTOL = 1e-5
CUDA_TESTS = ("tests/analysis/test_on_cuda.py", "tests/analysis/test_fused.py")
ARMS = ("scale", "adamw")


def fused_matches_readable(model_name: str, device: str) -> dict:
    """Largest relative difference between the fused and the readable SCALE step over
    ``STEPS_EQUAL`` steps on ``model_name``'s shapes, on ``device``."""
    config = load_config(model_name)
    models = [build_model(config, seed=0).to(device) for _ in range(2)]
    readable = build_optimizer("scale", models[0], lr=1e-3)
    fused = build_optimizer("scale", models[1], lr=1e-3, fused=True)
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(STEPS_EQUAL):
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            grad = (torch.randn(a.shape, generator=gen) * 1e-2).to(device)
            a.grad, b.grad = grad.clone(), grad.clone()
        readable.step()
        fused.step()
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            scale = a.detach().abs().max().clamp_min(1e-30)
            worst = max(worst, float((a.detach() - b.detach()).abs().max() / scale))
    return {"model": model_name, "steps": STEPS_EQUAL, "max_rel_diff": worst, "equal": worst <= EQUAL_RTOL}


def short_run(config: TrainConfig, out: Path) -> dict:
    """One arm through the trainer: steady tokens/s, the hardware fraction, peak memory."""
    cuda = config.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train(config, out=out, overwrite=True, progress=False)
    frame = load_run(out)
    steady = scalars(frame, "tokens_per_s")["value"].tolist()[len(result.losses) // 5 :]
    row = {
        "optimizer": config.optimizer,
        "model": config.model,
        "precision": config.precision,
        "steps": result.steps,
        "final_train_loss": result.final_train_loss,
        "tokens_per_s": statistics.median(steady) if steady else result.tokens_per_s,
    }
    for stat in ("mfu", "cpu_peak_fraction"):
        values = scalars(frame, stat)["value"].tolist()
        if values:
            row[stat] = statistics.median(values[len(values) // 5 :] or values)
    if cuda:
        predicted = plan(config).per_gpu("ddp")["total"]
        row |= {"peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9, "dry_run_gb": predicted / 1e9}
    return row


def cuda_tests() -> dict:
    """The CUDA-only tests, run by pytest in the clone this module is in; their exit code and
    summary line (an install without the tests says so)."""
    root = Path(__file__).resolve().parents[1]
    if not all((root / f).exists() for f in CUDA_TESTS):
        return {"files": list(CUDA_TESTS), "returncode": 0, "summary": "not run: the tests ship with a clone"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS],
        capture_output=True,
        text=True,
        cwd=root,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {"files": list(CUDA_TESTS), "returncode": done.returncode, "summary": lines[-1] if lines else ""}


def check(device: str, smoke: bool) -> dict:
    """Every part of the module docstring on ``device`` (``smoke``: nano, a few steps, no tests)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda needs a GPU and torch sees none; on CPU run "
            "`scale-lab bench gpu --device cpu --smoke`"
        )
    model, steps, batch, seq = ("nano", 6, 4, 32) if smoke else ("60m", 200, 64, 256)
    precision = "bf16-mixed" if device == "cuda" else "fp32"
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "smoke": smoke,
        "fused_vs_readable": fused_matches_readable(model, device),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="scale-lab-gpu-check-") as tmp:
        for arm in ARMS:
            config = TrainConfig(
                model=model,
                optimizer=arm,
                steps=steps,
                batch_size=batch,
                seq_len=seq,
                eval_every=0,
                eval_tokens=batch * seq,
                device=device,
                precision=precision,
            )
            report["runs"].append(short_run(config, Path(tmp) / arm))
    if not smoke:
        report["cuda_tests"] = cuda_tests()
    return report


def main(argv: list[str] | None = None) -> int:
    """``scale-lab bench gpu``: print the check and write it to ``--out``; 0 when the fused
    step matched and every test passed, 1 when not, 2 on bad input."""
    p = Parser(prog="scale-lab bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="nano and a few steps (CPU-sized)")
    p.add_argument("--out", default="gpu-check.json", type=output_file, help="the JSON file written")
    args = p.parse_args(argv)
    try:
        report = check(args.device, args.smoke)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_atomic(args.out, json.dumps(report, indent=2) + "\n")
    equal = report["fused_vs_readable"]
    print(
        f"{report['device']}: fused vs readable max relative difference {equal['max_rel_diff']:.2e} "
        f"({'equal' if equal['equal'] else 'NOT equal'} within {EQUAL_RTOL:g})"
    )
    for row in report["runs"]:
        extra = "".join(f", {k} {row[k]:.3f}" for k in ("mfu", "cpu_peak_fraction") if k in row)
        memory = (
            f", peak {row['peak_allocated_gb']:.2f} GB (dry run {row['dry_run_gb']:.2f} GB)"
            if "peak_allocated_gb" in row
            else ""
        )
        print(
            f"  {row['optimizer']:<6} {row['model']} {row['precision']}: "
            f"{row['tokens_per_s']:,.0f} tokens/s{extra}{memory}"
        )
    tests = report.get("cuda_tests")
    if tests:
        print(f"  CUDA tests: {tests['summary']}")
    print(f"wrote {args.out}")
    return 0 if equal["equal"] and (tests is None or tests["returncode"] == 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
