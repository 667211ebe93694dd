"""W&B (offline) and trackio (local) receive what the recording holds: a short instrumented
training with ``--wandb`` and ``--trackio`` logs every per-layer and per-role scalar of the
tidy recording at its step, read back from each tracker's own files."""

import glob
import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("wandb", reason="the trackers extra: pip install 'scale-lab[trackers]'")
pytest.importorskip("trackio", reason="the trackers extra: pip install 'scale-lab[trackers]'")

from analysis.recording import load_run  # noqa: E402
from tests.analysis.wandb_log import history  # noqa: E402

pytestmark = pytest.mark.xdist_group(
    "test_trackers_for_real"
)  # its module fixture is built once, on one worker

ARGS = [
    "--model",
    "nano",
    "--steps",
    "4",
    "--batch_size",
    "8",
    "--micro_batch_size",
    "2",
    "--seq_len",
    "32",
    "--eval_every",
    "2",
    "--eval_tokens",
    "512",
    "--instrument",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("trackers")
    env = dict(
        os.environ,
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(base),
        TRACKIO_DIR=str(base / "trackio"),
        TRACKIO_DISABLE_TELEMETRY="1",
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.training",
            *ARGS,
            "--out",
            str(base / "run"),
            "--wandb",
            "scale-lab-test",
            "--trackio",
            "scale-lab-test",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return base, env


def _expected(run_dir) -> dict[tuple[int, str], float]:
    """(step, tag) -> value as a tracker should have it: per-layer and run-level rows."""
    frame = load_run(run_dir).dropna(subset=["value"])
    return {
        (int(r.step), f"{r.stat}/{r.param}" if isinstance(r.param, str) else r.stat): r.value
        for r in frame.itertuples()
    }


def _check(got: dict[int, dict], expected) -> None:
    per_layer = [(s, t) for s, t in expected if t.startswith("grad_var/")]
    assert per_layer, "the run recorded no per-layer gradient variance"
    missing = [(s, t) for s, t in expected if t not in got.get(s, {})]
    assert not missing, missing[:5]
    for (step, tag), value in expected.items():
        assert math.isclose(got[step][tag], value, rel_tol=1e-6, abs_tol=1e-12), (step, tag)
    roles = {t for row in got.values() for t in row if "/role/" in t}
    assert {"grad_var/role/output", "grad_var/role/embedding"} <= roles


def test_wandb_offline_run_holds_the_recording(trained):
    base, _ = trained
    (path,) = glob.glob(str(base / "run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    got: dict[int, dict] = {}
    for row in history(path):
        got.setdefault(int(row["_step"]), {}).update(row)
    _check(got, _expected(base / "run"))


def test_trackio_run_holds_the_recording(trained):
    base, env = trained
    code = (
        "import json; from trackio.sqlite_storage import SQLiteStorage as S; "
        "print(json.dumps(S.get_logs('scale-lab-test', 'run'), default=str))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=300
    )
    got: dict[int, dict] = {}
    for row in json.loads(out.stdout.strip().splitlines()[-1]):
        got.setdefault(int(row["step"]), {}).update(row)
    _check(got, _expected(base / "run"))
