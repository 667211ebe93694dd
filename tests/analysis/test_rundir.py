"""Run directories are append-only records: config.json written once, a segment per resume,
experiment changes refused (or recorded), rows after the resumed checkpoint superseded, and
SIGINT/SIGTERM turned into a checkpoint and one line."""

import json
import os
import shutil
import signal

import pytest

from analysis.recording import CONFIG, load_run, load_segments
from analysis.training import loop
from analysis.training.cli import main
from analysis.training.config import ConfigError
from analysis.training.loop import train
from analysis.training.stopping import TrainingInterrupted
from tests.conftest import tiny_config

pytestmark = pytest.mark.xdist_group("test_rundir")  # its module fixture is built once, on one worker

TIMING = {"tokens_per_s", "step_time", "data_time", "flops_per_s", "cpu_peak_fraction"}


def _rows(run_dir):
    frame = load_run(run_dir)
    frame = frame[~frame["stat"].isin(TIMING)]
    return frame[["step", "param", "stat", "value"]].sort_values(
        ["step", "stat", "param"], na_position="first"
    )


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Six uninterrupted steps, checkpointed every 2 (all kept)."""
    out = tmp_path_factory.mktemp("full") / "run"
    train(tiny_config(save_every=2, keep_checkpoints=10), out=out, progress=False)
    return out


def test_a_changed_experiment_setting_is_refused_and_the_records_kept(full, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full, run)
    (run / "result.json").unlink()
    config = (run / CONFIG).read_bytes()
    with pytest.raises(ConfigError, match=r"would change the experiment \(lr 0.001 -> 0.006\)"):
        train(tiny_config(save_every=2, keep_checkpoints=10, lr=6e-3), out=run, resume=True, progress=False)
    assert (run / CONFIG).read_bytes() == config and len(load_segments(run)) == 1


def test_an_allowed_change_is_recorded_and_config_json_is_never_rewritten(full, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full, run)
    (run / "result.json").unlink()
    config = (run / CONFIG).read_bytes()
    train(
        tiny_config(save_every=2, keep_checkpoints=10, steps=8),
        out=run,
        resume=True,
        allow_change=True,
        progress=False,
    )
    segments = load_segments(run)
    assert (run / CONFIG).read_bytes() == config
    assert [s["start_step"] for s in segments] == [0, 6]
    assert segments[-1]["changed"] == {"steps": [6, 8]}
    assert segments[-1]["resumed_from"] == "ckpt-00000006.pt"


def test_a_corrupted_config_is_refused_with_the_fix(full, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full, run)
    (run / CONFIG).write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is unreadable .*pass --overwrite"):
        train(tiny_config(save_every=2), out=run, resume=True, progress=False)


def test_rows_without_a_checkpoint_are_nothing_to_resume_from(full, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full, run)
    for path in run.glob("ckpt-*.pt"):
        path.unlink()
    (run / "result.json").unlink()
    before = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="nothing to resume from"):
        train(tiny_config(save_every=2), out=run, resume=True, progress=False)
    assert (run / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("crash_after", [2, 4])
def test_resume_after_a_crash_keeps_one_row_per_step_param_stat(full, tmp_path, crash_after):
    """A crash after step 5 whose last checkpoint is ``crash_after``: the rows of the steps
    in between are superseded by the resumed run's, and the records equal the uninterrupted
    run's (timings aside)."""
    run = tmp_path / "run"
    shutil.copytree(full, run)
    (run / "result.json").unlink()
    for path in run.glob("ckpt-*.pt"):
        if int(path.stem.split("-")[1]) > crash_after:
            path.unlink()
    train(tiny_config(save_every=2, keep_checkpoints=10), out=run, resume=True, progress=False)
    rows = _rows(run)
    assert not rows.duplicated(["step", "param", "stat"]).any()
    assert rows.reset_index(drop=True).equals(_rows(full).reset_index(drop=True))
    assert load_segments(run)[-1]["superseded_rows"] > 0


def _signal_after(monkeypatch, step, signum):
    """Send ``signum`` to this process right after step ``step`` is logged; returns the real
    ``log_step`` so a test can put it back."""
    real = loop.log_step

    def log_then_signal(run, done, row):
        real(run, done, row)
        if done == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(loop, "log_step", log_then_signal)
    return real


def test_sigint_checkpoints_and_resume_finishes_the_same_run(full, tmp_path, monkeypatch):
    real = _signal_after(monkeypatch, 3, signal.SIGINT)
    run = tmp_path / "run"
    with pytest.raises(
        TrainingInterrupted, match="interrupted at step 3; checkpoint .*continue with --resume"
    ) as caught:
        train(tiny_config(save_every=2, keep_checkpoints=10), out=run, progress=False)
    assert caught.value.exit_code == 130 and (run / "ckpt-00000003.pt").exists()
    monkeypatch.setattr(loop, "log_step", real)
    train(tiny_config(save_every=2, keep_checkpoints=10), out=run, resume=True, progress=False)
    assert _rows(run).reset_index(drop=True).equals(_rows(full).reset_index(drop=True))


def test_sigterm_from_the_cli_is_one_line_and_exit_143(tmp_path, monkeypatch, capsys):
    _signal_after(monkeypatch, 2, signal.SIGTERM)
    code = main(
        [
            "--model",
            "nano",
            "--steps",
            "4",
            "--batch_size",
            "4",
            "--seq_len",
            "32",
            "--eval_every",
            "0",
            "--eval_tokens",
            "256",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 143 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("interrupted at step 2; checkpoint")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back
    assert json.loads((tmp_path / "r" / CONFIG).read_text())["config"]["steps"] == 4


def _lock(run, pid):
    import socket

    run.mkdir(parents=True, exist_ok=True)
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def test_a_second_writer_is_refused_and_the_directory_untouched(tmp_path):
    run = tmp_path / "run"
    _lock(run, os.getpid())  # a live process holds it
    with pytest.raises(ConfigError, match=f"is being written by pid {os.getpid()}"):
        train(tiny_config(), out=run, overwrite=True, progress=False)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_stale_lock_is_reported_and_replaced(tmp_path, capsys):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = tmp_path / "run"
    _lock(run, gone.pid)
    train(tiny_config(steps=2), out=run, overwrite=True, progress=False)
    assert f"stale lock (pid {gone.pid} is not running)" in capsys.readouterr().err
    assert not (run / ".lock").exists()  # given back when the run ended


def test_a_failed_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch):
    import torch

    from analysis.training import checkpoint

    real, calls = torch.save, []

    def disk_full_on_second(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as handle:  # a partial file, as a full disk leaves
                handle.write(b"partial")
            raise OSError(28, "No space left on device")
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_on_second)
    run = tmp_path / "run"
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"No space left on device\); the last good "
        r"checkpoint, ckpt-00000002.pt, is kept",
    ):
        train(tiny_config(save_every=2, keep_checkpoints=10), out=run, progress=False)
    assert [p.name for p in checkpoint.checkpoints(run)] == ["ckpt-00000002.pt"]
    assert not list(run.glob("*.tmp"))
    monkeypatch.setattr(torch, "save", real)
    assert torch.load(run / "ckpt-00000002.pt", weights_only=False)["step"] == 2


def test_a_failed_row_write_is_one_line_from_the_cli(tmp_path, monkeypatch, capsys):
    class Full:
        closed = False

        def write(self, text):
            raise OSError(28, "No space left on device")

        def close(self):
            self.closed = True

    real = loop.log_step

    def fill_disk_at_2(run, done, row):
        if done == 2:
            run.recorder._metrics = Full()
        real(run, done, row)

    monkeypatch.setattr(loop, "log_step", fill_disk_at_2)
    code = main(
        [
            "--model",
            "nano",
            "--steps",
            "4",
            "--batch_size",
            "4",
            "--seq_len",
            "32",
            "--eval_every",
            "0",
            "--eval_tokens",
            "256",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "No space left on device" in err
    assert not (tmp_path / "r" / ".lock").exists()
