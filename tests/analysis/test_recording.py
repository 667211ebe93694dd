import os
import signal
import subprocess
import sys
import time

import pytest

from analysis.recording import Recorder, RecordingError, load_run
from analysis.results.root import load_runs


def test_torn_last_line_is_skipped(tmp_path):
    with Recorder(tmp_path / "r") as rec:
        rec.write_config({"config": {"optimizer": "scale", "model": "nano", "seed": 0}})
        rec.log(1, {"loss": 2.0})
        rec.log(1, {"grad_norm": float("nan")}, param="lm_head.weight", role="output")
    with open(tmp_path / "r" / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "param": nu')
    frame = load_run(tmp_path / "r")
    assert len(frame) == 2 and frame["value"].isna().sum() == 1
    assert set(frame["optimizer"]) == {"scale"}


def test_load_runs_errors_name_the_fix(tmp_path):
    with pytest.raises(RecordingError, match="no run directories"):
        load_runs(tmp_path)


def test_kill_9_leaves_flushed_rows_readable(tmp_path):
    run = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "analysis.training",
        "--model",
        "nano",
        "--steps",
        "2000",
        "--batch_size",
        "4",
        "--seq_len",
        "32",
        "--eval_every",
        "0",
        "--eval_tokens",
        "256",
        "--instrument",
        "--out",
        str(run),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            metrics = run / "metrics.jsonl"
            if metrics.exists() and metrics.read_text().count('"stat": "loss"') >= 6:
                break
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    frame = load_run(run)
    losses = frame[(frame["stat"] == "loss") & frame["param"].isna()]
    assert len(losses) >= 5
    assert list(losses["step"]) == list(range(1, len(losses) + 1))
    assert frame["param"].notna().any()  # instrumentation rows made it too
    assert not (run / "result.json").exists()


def test_a_failed_vector_write_is_one_recording_error(tmp_path, monkeypatch):
    """A full disk while writing spectra.jsonl: the same one-line RecordingError as metrics (the
    trainer adds what can be resumed: tests/test_hostile_inputs.py)."""
    import builtins

    rec = Recorder(tmp_path / "run")
    real_open = builtins.open

    def no_space(path, *args, **kwargs):
        if str(path).endswith("spectra.jsonl"):
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_space)
    with pytest.raises(
        RecordingError,
        match=r"cannot write .*spectra.jsonl \(No space left on "
        r"device\); the rows written before it are kept",
    ):
        rec.log_vector(1, "w", "hidden", "update_spectrum", [1.0, 0.5])
    rec.close()


def test_a_table_reads_each_line_as_json_loads_does(tmp_path):
    """The reader's fast line parser keeps ``json.loads``'s verdict on every line: a dict is a
    row, anything else (torn, two values, a list, a BOM, trailing text) is counted as torn."""
    import json

    from analysis.recording import _read_jsonl

    lines = [
        '{"step": 1, "value": 0.5}',
        ' {"step": 2, "value": NaN} \r',
        '{"step": 3',
        '{"a": 1}{"b": 2}',
        '{"a": 1},{"b": 2}',
        "[1, 2]",
        '"text"',
        '\ufeff{"a": 1}',
        '{"a": 1} x',
        "",
        "   ",
        '\t{"x": [1, {"y": null}], "s": "\\u00e9"}\t',
        '{"a": 1}\x0c',
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected, expected_torn = [], []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            expected.append(row)
        elif line.strip():
            expected_torn.append(number)
    torn = []
    rows = _read_jsonl(path, torn)
    assert json.dumps(rows) == json.dumps(expected) and torn == expected_torn
    assert len(rows) == 3 and len(torn) == 8
