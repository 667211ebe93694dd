"""The toolkit outside a clone: the wheel, installed with ``--no-deps`` into a fresh directory
and run from another working directory, sets up the offline corpus in its user cache
(``SCALE_LAB_HOME``), trains 5 steps on it and draws figures from the reference recordings it
carries; a command that needs the corpus before it exists says so in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_installed")  # its module fixture is built once, on one worker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(environment, work directory)`` for the wheel installed into a fresh target."""
    base = tmp_path_factory.mktemp("installed")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(base / "wheel"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((base / "wheel").glob("scale_lab-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(base / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    env = dict(
        os.environ,
        PYTHONPATH=str(base / "site"),
        SCALE_LAB_HOME=str(base / "home"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
    )
    work = base / "elsewhere"
    work.mkdir()
    return env, work, base


def scale_lab(installed, *args, check=True):
    env, work, _ = installed
    out = subprocess.run(
        [sys.executable, "-m", "analysis.cli", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_an_installed_wheel_sets_up_trains_and_draws(installed):
    env, work, base = installed
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import analysis, toy_models.paths as p; "
            "print(analysis.__file__); print(p.shipped_data()); print(p.built_data())",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(base / "site")) and where[1].startswith(str(base / "site"))
    assert where[2] == str(base / "home")
    # before setup: one line naming the command that builds the corpus
    early = scale_lab(
        installed,
        "train",
        "--model",
        "nano",
        "--steps",
        "2",
        "--no-progress",
        "--out",
        "runs/early",
        check=False,
    )
    assert early.returncode == 2 and "scale-lab setup" in early.stderr
    assert len(early.stderr.strip().splitlines()) == 1
    setup = scale_lab(installed, "setup")
    assert f"the bundled corpus is in {base / 'home' / 'corpus'}" in setup.stdout
    assert "is ready in" in scale_lab(installed, "setup").stdout  # a second setup rebuilds nothing
    train = scale_lab(
        installed,
        "train",
        "--model",
        "nano",
        "--steps",
        "5",
        "--batch_size",
        "4",
        "--seq_len",
        "64",
        "--eval_every",
        "0",
        "--eval_tokens",
        "2048",
        "--no-progress",
        "--out",
        "runs/five",
    )
    assert "validation loss" in train.stdout and (work / "runs" / "five" / "result.json").exists()
    assert list((base / "home" / "cache").glob("*.npy"))  # the token cache went to the user cache
    figures = scale_lab(installed, "figures", "--only", "loss_curves", "lr_sweep", "grad_variance_by_layer")
    assert "wrote 3 figures" in figures.stdout and (work / "figures" / "lr_sweep.png").exists()
    # the fused step's CPU kernels ship as source and build from the installed copy
    kernels = subprocess.run(
        [sys.executable, "-c", "from analysis.optim import cpu_kernels as k; k.kernels(); print(k.SOURCE)"],
        cwd=work,
        capture_output=True,
        text=True,
        env=dict(env, TORCH_EXTENSIONS_DIR=str(base / "extensions")),
        timeout=600,
    )
    assert kernels.returncode == 0 and kernels.stdout.startswith(str(base / "site")), kernels.stderr[-2000:]
    assert list((base / "extensions").rglob("scale_lab_cpu_*.so"))
    copied = scale_lab(installed, "notebooks", "--copy", "course")
    assert "copied 10 files" in copied.stdout and (work / "course" / "03_layer_noise.py").exists()
