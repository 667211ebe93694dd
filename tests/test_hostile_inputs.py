"""Off the happy path: every bad value, bad file, fault and race is one line, a non-zero exit,
the lock given back and the run directory's earlier contents intact.

Faults are injected where the operating system would raise them: the run's table files are
opened through a wrapper whose writes and flushes fail with ENOSPC, EACCES or EIO from a given
step on (the buffered bytes then fail again at close, as a full disk does), and ``torch.save``
leaves a partial file and raises as it does on a full disk."""

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from analysis.recording import METRICS, SPECTRA, load_run, load_segments
from analysis.results import stats
from analysis.training import checkpoint, loop
from analysis.training.cli import main
from analysis.training.loop import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.xdist_group("test_hostile_inputs")  # its module fixture is built once, on one worker

TINY = [
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
    "--no-progress",
]


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def one_line(code, err):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


def snapshot(run_dir):
    """Every file of a run directory and its bytes' hash (the lock excluded)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.iterdir())
        if p.is_file() and p.name != ".lock"
    }


# ---------------------------------------------------------------- values checked first
@pytest.mark.parametrize(
    "args, message",
    [
        (["--log_every", "0"], "log_every must be >= 1"),
        (["--seed", "-1"], "seed must be in [0, 2^32)"),
        (["--micro_batch_size", "-2"], "micro_batch_size must be > 0"),
        (["--lr", "inf"], "must be finite numbers, got lr inf"),
        (["--lr", "nan"], "must be finite numbers, got lr nan"),
        (["--adam_lr", "inf"], "adam_lr inf"),
        (["--weight_decay", "-0.1"], "weight_decay must be >= 0"),
        (["--beta", "1.0"], "beta must be in [0, 1)"),
        (["--adam_betas", "0.9", "1.5"], "betas must be in [0, 1)"),
        (["--save_every", "-1"], "save_every must be >= 0"),
        (["--eval_tokens", "0"], "eval_tokens must be > 0"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_bad_value_is_refused_before_the_run_directory_is_made(args, message, tmp_path, capsys):
    code, err = run_cli(TINY + args + ["--out", str(tmp_path / "r")], capsys)
    one_line(code, err)
    assert message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_resume_of_a_directory_with_no_run_refuses(make, tmp_path, capsys):
    run = tmp_path / "r"
    if make == "empty":
        run.mkdir()
    code, err = run_cli(TINY + ["--out", str(run), "--resume"], capsys)
    one_line(code, err)
    assert "holds no run" in err and "drop --resume" in err
    assert not run.exists() or not any(run.iterdir())


def test_the_loser_of_two_writers_is_told_who_holds_the_lock(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        import socket

        (run / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        code, err = run_cli(TINY + ["--out", str(run)], capsys)
    finally:
        holder.communicate(b"")
    one_line(code, err)
    assert f"being written by pid {holder.pid}" in err and "--overwrite" not in err


def test_an_empty_data_file_is_named(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "validation.jsonl").write_text('{"text": "a b c"}\n')
    code, err = run_cli(
        TINY + ["--data", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "r")], capsys
    )
    one_line(code, err)
    assert f"data file {tmp_path / 'train.jsonl'} is empty" in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- faults while writing
class FailingFile:
    """A table file whose writes fail with ``code`` once ``failing`` is set; the bytes it
    could not write are still buffered, so closing it fails again (as a full disk does)."""

    def __init__(self, real, code):
        self.real, self.code, self.failing, self.pending = real, code, False, False

    def write(self, text):
        if self.failing:
            self.pending = True
            raise OSError(self.code, os.strerror(self.code))
        return self.real.write(text)

    def flush(self):
        if self.failing:
            raise OSError(self.code, os.strerror(self.code))
        self.real.flush()

    @property
    def closed(self):
        return self.real.closed

    def close(self):
        self.real.close()
        if self.pending:
            raise OSError(self.code, os.strerror(self.code))


@pytest.mark.parametrize("table", [METRICS, SPECTRA])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EIO])
def test_a_failed_table_write_is_one_line_and_keeps_every_earlier_row(
    table, code, tmp_path, monkeypatch, capsys
):
    import analysis.recording as recording

    files = {}

    def opening(path, *args, **kwargs):
        handle = FailingFile(open(path, *args, **kwargs), code)
        files[path.name] = handle
        return handle

    monkeypatch.setattr(recording, "open", opening, raising=False)
    real = loop.log_step

    def fail_from_step_3(run, done, row):
        if done == 3:
            files[table].failing = True
        real(run, done, row)

    monkeypatch.setattr(loop, "log_step", fail_from_step_3)
    run = tmp_path / "r"
    args = TINY + ["--out", str(run), "--save_every", "2"]
    if table == SPECTRA:  # spectra are written on the instrumentation's full steps (3 is one)
        args += ["--instrument"]
    code_, err = run_cli(args, capsys)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("note:"))
    one_line(code_, err)
    assert f"cannot write {run / table}" in err and os.strerror(code) in err
    assert "ckpt-00000002.pt, is kept" in err and "--resume" in err
    assert not (run / ".lock").exists()
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    monkeypatch.undo()
    steps = set(load_run(run)["step"])
    assert {0, 1, 2} <= steps  # every row written before the fault reads back


def test_a_full_disk_during_the_first_checkpoint_says_there_is_none(tmp_path, monkeypatch, capsys):
    def full_disk(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\0" * 4096)  # a partial file, as a full disk leaves it
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 8192")

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "r"
    code, err = run_cli(TINY + ["--out", str(run), "--save_every", "2"], capsys)
    one_line(code, err)
    assert "cannot write checkpoint" in err and "no checkpoint was saved yet" in err
    assert "--resume" not in err
    assert not list(run.glob("*.tmp")) and not (run / ".lock").exists()


# ---------------------------------------------------------------- checkpoints refused
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A 6-step run stopped after its step-4 checkpoint (result removed)."""
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(tiny_config(steps=4, save_every=2, keep_checkpoints=1, eval_every=0), out=run, progress=False)
    (run / "result.json").unlink()
    return run


def _edit(state, what):
    if what.startswith("no "):
        key = what[3:]
        if "." in key:
            outer, inner = key.split(".")
            del state[outer][inner]
        else:
            del state[key]
    elif what == "missing state keys":
        state["model"].pop(next(iter(state["model"])))
    elif what == "extra param group":
        state["optimizer"]["param_groups"].append(dict(state["optimizer"]["param_groups"][0], params=[]))
    elif what == "fewer param groups":
        state["optimizer"]["param_groups"].pop()
    return state


EDITS = [
    "no optimizer",
    "no identity",
    "no rng",
    "no scheduler",
    "no step",
    "no model",
    "no identity.shapes",
    "no rng.torch",
    "no optimizer.state",
    "missing state keys",
    "extra param group",
    "fewer param groups",
    "torn",
    "not a dict",
]


@pytest.mark.parametrize("what", EDITS)
def test_a_bad_checkpoint_is_refused_in_one_line_and_nothing_changes(what, interrupted, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    path = checkpoint.checkpoints(run)[-1]
    if what == "torn":
        path.write_bytes(path.read_bytes()[:1000])
    elif what == "not a dict":
        torch.save([1, 2, 3], path)
    else:
        torch.save(_edit(torch.load(path, weights_only=False), what), path)
    before = snapshot(run)
    code, err = run_cli(
        [
            "--model",
            "nano",
            "--steps",
            "6",
            "--batch_size",
            "4",
            "--seq_len",
            "32",
            "--eval_every",
            "0",
            "--eval_tokens",
            "512",
            "--warmup_steps",
            "2",
            "--save_every",
            "2",
            "--keep_checkpoints",
            "1",
            "--no-progress",
            "--out",
            str(run),
            "--resume",
            "--allow-change",
        ],
        capsys,
    )
    one_line(code, err)
    assert f"cannot resume from checkpoint {path}" in err
    assert "no older checkpoint exists" in err
    assert snapshot(run) == before and not (run / ".lock").exists()


# ---------------------------------------------------------------- what a resume records
def test_an_allowed_lr_change_takes_effect_and_every_reader_sees_the_true_run(tmp_path):
    import shutil

    base = tmp_path / "base"
    train(tiny_config(steps=6, save_every=3, keep_checkpoints=5, eval_every=0), out=base, progress=False)
    plain, changed = tmp_path / "plain", tmp_path / "changed"
    for run in (plain, changed):
        shutil.copytree(base, run)
        (run / "result.json").unlink()
        for ckpt in checkpoint.checkpoints(run)[1:]:
            ckpt.unlink()  # resume from step 3
    train(
        tiny_config(steps=6, save_every=3, keep_checkpoints=5, eval_every=0),
        out=plain,
        resume=True,
        progress=False,
    )
    train(
        tiny_config(steps=9, save_every=3, keep_checkpoints=5, eval_every=0, lr=3e-3, weight_decay=0.1),
        out=changed,
        resume=True,
        allow_change=True,
        progress=False,
    )

    def rows(run, stat):
        frame = load_run(run)
        return frame[(frame["stat"] == stat) & frame["param"].isna()].set_index("step")["value"]

    # the plain resume equals the uninterrupted run; the changed one leaves it from step 4 on
    assert rows(plain, "loss").tolist() == rows(base, "loss").tolist()
    assert rows(changed, "loss").loc[:3].tolist() == rows(base, "loss").loc[:3].tolist()
    assert rows(changed, "loss").loc[4] == rows(base, "loss").loc[4]  # step 4's gradient: same weights
    assert rows(changed, "loss").loc[5] != rows(base, "loss").loc[5]
    # the recorded lr is the lr each step used: the new schedule (9 steps, peak 3e-3) from step 4
    from analysis.training.lr_schedule import lr_lambda

    new = lr_lambda(tiny_config(steps=9, lr=3e-3))
    old = lr_lambda(tiny_config(steps=6))
    assert rows(base, "lr").tolist() == pytest.approx([1e-3 * old(s) for s in range(6)], rel=1e-12)
    assert rows(changed, "lr").loc[4:].tolist() == pytest.approx(
        [3e-3 * new(s) for s in range(3, 9)], rel=1e-12
    )
    segment = load_segments(changed)[-1]
    assert segment["changed"]["lr"] == [1e-3, 3e-3] and segment["settings"]["steps"] == 9
    assert segment["settings"]["weight_decay"] == 0.1
    # readers: 9 steps and the tokens of 9 steps
    table = stats.final_results(tmp_path).set_index("run")
    assert table.loc[str(changed), "steps"] == 9
    assert table.loc[str(changed), "tokens"] == 9 * 4 * 32
    assert table.loc[str(plain), "steps"] == 6


def test_an_allowed_change_resumes_with_the_groups_a_fresh_optimizer_would_have(tmp_path):
    """After the resume: every group's settings are those of an optimizer built for the new
    config (lr structure, initial_lr, weight decay), at the new schedule's factor for the step
    the checkpoint holds; the per-parameter state is the checkpoint's."""
    from analysis.optim.recipes import build_optimizer
    from analysis.training.lr_schedule import lr_lambda
    from analysis.training.setup import setup

    run = tmp_path / "run"
    train(tiny_config(steps=6, save_every=3, keep_checkpoints=5, eval_every=0), out=run, progress=False)
    (run / "result.json").unlink()
    checkpoint.checkpoints(run)[-1].unlink()
    new = tiny_config(
        steps=9, save_every=3, keep_checkpoints=5, eval_every=0, lr=3e-3, weight_decay=0.1, adam_lr=2e-2
    )
    resumed = setup(new, run, overwrite=False, resume=True, allow_change=True)
    try:
        fresh = build_optimizer(new.optimizer, resumed.model, new.optimizer_config())
        factor = lr_lambda(new)(3)
        assert resumed.scheduler.last_epoch == 3
        for got, want in zip(resumed.optimizer.param_groups, fresh.param_groups, strict=True):
            assert got["initial_lr"] == want["lr"] and got["lr"] == want["lr"] * factor
            assert got["weight_decay"] == want["weight_decay"] == 0.1
        saved = torch.load(checkpoint.checkpoints(run)[-1], weights_only=False)["optimizer"]["state"]
        assert len(resumed.optimizer.state) == len(saved) > 0
    finally:
        resumed.close()


# ---------------------------------------------------------------- caches under concurrency
def test_processes_tokenizing_on_an_empty_cache_all_succeed_with_one_file(tmp_path):
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from toy_models.data import token_array
        from toy_models.tokenizer import load_tokenizer
        tokens = token_array("bundled", "validation", load_tokenizer(), cache_dir=Path({str(cache)!r}))
        print(len(tokens))
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    assert len({o.strip() for o, _ in outs}) == 1
    assert [p.name for p in cache.iterdir()] == [next(cache.iterdir()).name]
    assert next(cache.iterdir()).suffix == ".npy"


# ---------------------------------------------------------------- instrumentation's promise
def test_instrument_at_the_default_batch_records_gradient_variance(tmp_path):
    from analysis.instrument.schedule import InstrumentConfig

    run = tmp_path / "r"
    config = tiny_config(steps=3, eval_every=0, instrument=InstrumentConfig())
    assert config.accumulation() == 1  # one micro-batch per step, as the default
    train(config, out=run, progress=False)
    frame = load_run(run)
    var = frame[frame["stat"] == "grad_var"]
    assert sorted(var["step"].unique()) == [1, 2, 3]
    assert (var["value"] > 0).all()


def test_a_batch_of_one_sequence_says_why_it_has_no_variance(tmp_path, capsys):
    code = main(
        [
            "--model",
            "nano",
            "--steps",
            "2",
            "--batch_size",
            "1",
            "--seq_len",
            "32",
            "--eval_every",
            "0",
            "--eval_tokens",
            "256",
            "--no-progress",
            "--instrument",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0
    assert "records no gradient variance" in err and "raise --batch_size" in err


# ---------------------------------------------------------------- figures name bad rows
def test_figures_name_bad_rows_and_draw_a_nan_final_eval_as_a_divergence(tmp_path):
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    from analysis.results import figures
    from analysis.results.run_set import RunSet

    good = tmp_path / "runs" / "good"
    train(tiny_config(steps=4, eval_every=2), out=good, progress=False)
    bad = tmp_path / "runs" / "bad"
    shutil.copytree(good, bad)
    with open(bad / METRICS, "a") as handle:
        handle.write('{"step": 4, "param": null, "role": null, "stat": "eval_loss", "value": null}\n')
        handle.write('{"step": 4, "param": null, "role": null, "stat": "loss", "val')  # torn
    lines = [f.read_text().splitlines() for f in (bad / METRICS,)][0]
    # the finished run's last validation row became non-finite: drop the finite one
    kept = [
        line
        for line in lines
        if not ('"eval_loss"' in line and '"step": 4' in line and '"value": null' not in line)
    ]
    (bad / METRICS).write_text("\n".join(kept))
    notes = RunSet(tmp_path / "runs").bad_row_notes()
    assert notes == [
        "note: run bad: 1 unreadable line(s) skipped; 1 non-finite value(s): 1 NaN or null (eval_loss x1)"
    ]
    fig = figures.loss_curves(RunSet(tmp_path / "runs"))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("diverged" in t for t in texts), texts


def test_figures_with_no_arguments_draw_the_shipped_reference(tmp_path, monkeypatch, capsys):
    from analysis.results import figures

    monkeypatch.chdir(tmp_path)
    code = figures.main(["--only", "loss_curves", "lr_sweep"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert (tmp_path / "figures" / "lr_sweep.png").exists()


# ---------------------------------------------------------------- a file made unwritable
def _eperm():
    return PermissionError(errno.EPERM, os.strerror(errno.EPERM))


@pytest.mark.parametrize(
    "target",
    ["config.json", "segments.jsonl", "ckpt-00000004.pt", "older checkpoint", "result.json", ".lock"],
)
def test_a_file_of_the_run_turning_unwritable_is_one_line_naming_it(target, tmp_path, monkeypatch, capsys):
    """As ``chattr +i`` does: a rename onto the file, an append to it or its removal fails with
    EPERM; the run says which file in one line, keeps what it wrote and gives the lock back
    (or names it when the lock itself is the file)."""
    from pathlib import Path

    from analysis.training import rundir

    real_replace, real_unlink = os.replace, Path.unlink

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == target:
            raise _eperm()
        return real_replace(src, dst, *args, **kwargs)

    def unlink(self, missing_ok=False):
        if self.name == target or (target == "older checkpoint" and self.name == "ckpt-00000002.pt"):
            raise _eperm()
        return real_unlink(self, missing_ok=missing_ok)

    def opening(path, mode="r", *args, **kwargs):
        if Path(path).name == target and "a" in mode:
            raise _eperm()
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(rundir, "open", opening, raising=False)
    run = tmp_path / "r"
    code, err = run_cli(TINY + ["--out", str(run), "--save_every", "2", "--keep_checkpoints", "1"], capsys)
    monkeypatch.undo()
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "Operation not permitted" in err
    if target == ".lock":  # the run itself finished: its result stands, the lock is named
        assert code == 0 and lines[0].startswith("note: the lock") and (run / "result.json").exists()
        return
    assert code == 2, err
    named = "ckpt-00000002.pt" if target == "older checkpoint" else target
    assert named in err
    assert not (run / ".lock").exists()
    assert not (run / "result.json").exists()
    if target not in ("config.json", "segments.jsonl"):  # trained: its rows read back
        assert {1, 2} <= set(load_run(run)["step"]) and "--resume" in err


# ---------------------------------------------------------------- a finished run stays finished
def test_a_resume_of_a_finished_run_changes_nothing_and_an_extension_covers_every_segment(tmp_path, capsys):
    run = tmp_path / "r"
    args = TINY + ["--out", str(run), "--save_every", "2"]
    assert main(args) == 0
    capsys.readouterr()
    before = snapshot(run)
    for extra in ([], ["--allow-change"]):  # the same steps: nothing to resume, with or without
        code, err = run_cli(args + ["--resume", *extra], capsys)
        one_line(code, err)
        assert "is finished at step 4 (result.json)" in err and "--allow-change" in err
        assert snapshot(run) == before
    longer = args.copy()
    longer[longer.index("--steps") + 1] = "6"
    assert main(longer + ["--resume", "--allow-change"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 6 and result["tokens"] == 6 * 4 * 32
    assert result["tokens_per_s"] > 0 and result["final_train_loss"] == result["final_train_loss"]
    assert "run_dir" not in result  # no absolute path of this machine in the record


def test_a_result_that_is_not_finite_or_complete_is_never_written(tmp_path):
    from analysis.recording import RESULT_KEYS, Recorder, RecordingError

    with Recorder(tmp_path) as rec:
        for bad, what in (
            (
                {
                    "steps": 4,
                    "first_eval_loss": 9.0,
                    "final_eval_loss": 7.0,
                    "final_perplexity": 1e3,
                    "final_train_loss": float("nan"),
                },
                "not finite: final_train_loss",
            ),
            ({"steps": 4, "first_eval_loss": 9.0}, "missing final_eval_loss"),
        ):
            with pytest.raises(RecordingError, match=what):
                rec.finish(bad, required=RESULT_KEYS)
    assert not (tmp_path / "result.json").exists()


def test_a_resume_under_other_package_versions_says_so_and_records_both(tmp_path, capsys):
    """The message is compared whole, as a golden loss is: a change of wording is a decision."""
    from analysis.provenance import provenance

    run = tmp_path / "r"
    args = TINY + ["--out", str(run), "--save_every", "2"]
    assert main(args) == 0
    (run / "ckpt-00000004.pt").unlink()  # as if killed after step 2
    (run / "result.json").unlink()
    segments = [json.loads(line) for line in (run / "segments.jsonl").read_text().splitlines()]
    now = provenance()["versions"]
    segments[0]["versions"] = {**now, "torch": "2.12.0", "datasets": "5.1.0"}
    (run / "segments.jsonl").write_text("".join(json.dumps(s) + "\n" for s in segments))
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert err == [
        f"note: resuming with other package versions than the run ran with (torch 2.12.0 "
        f"-> {now['torch']}, datasets 5.1.0 -> {now['datasets']}); the new segment "
        "records both, and results may differ from an uninterrupted run"
    ]
    last = load_segments(run)[-1]
    assert last["versions"] == now and last["versions_changed"] == {
        "torch": ["2.12.0", now["torch"]],
        "datasets": ["5.1.0", now["datasets"]],
    }


# ---------------------------------------------------------------- a model config of your own
SMALL_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            {"hidden_size": 66},
            "hidden_size 66 is not divisible by num_attention_heads 4; choose a "
            "multiple of 4 (e.g. 64 or 68)",
        ),
        ({"num_key_value_heads": 3}, "num_attention_heads 4 is not divisible by num_key_value_heads 3"),
        ({"vocab_size": 1}, "vocab_size 1 cannot hold a tokenizer"),
        ({"vocab_size": 100}, "vocab_size 100 is smaller than the tokenizer's 8192 tokens"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer, got 0"),
        ({"hidden_act": "no-such-act"}, "transformers refuses the model config (KeyError: 'no-such-act')"),
    ],
)
def test_a_bad_model_config_of_your_own_is_one_line(edit, message, tmp_path, capsys):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(SMALL_LLAMA | edit))
    code, err = run_cli([*TINY, "--model", str(path), "--out", str(tmp_path / "r")], capsys)
    one_line(code, err)
    assert message in err and str(path) in err
    assert not (tmp_path / "r").exists()


def test_a_model_config_of_your_own_trains_with_the_vocabulary_it_states(tmp_path, capsys):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(SMALL_LLAMA))
    assert main([*TINY, "--model", str(path), "--out", str(tmp_path / "a")]) == 0
    record = json.loads((tmp_path / "a" / "config.json").read_text())
    assert record["config"]["model"] == str(path) and record["vocab_size"] == 8192  # the tokenizer's
    path.write_text(json.dumps(SMALL_LLAMA | {"vocab_size": 9000}))
    assert main([*TINY, "--model", str(path), "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["vocab_size"] == 9000
    code, err = run_cli([*TINY, "--model", "gpt5", "--out", str(tmp_path / "c")], capsys)
    one_line(code, err)
    assert "or pass a path to a config JSON" in err


# ---------------------------------------------------------------- read-only caches and homes
def test_setup_into_a_read_only_home_is_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from toy_models import corpus

    home = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if home in (self, *self.parents):
            raise _eperm()
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(corpus, "DOWNLOAD_DIR", home / "downloads")
    code = corpus.main(["--out", str(home / "corpus")])
    err = capsys.readouterr().err.strip()
    one_line(code, err)
    assert f"cannot write in {home / 'downloads'} (Operation not permitted)" in err
    assert "SCALE_LAB_HOME" in err and "scale-lab setup --home DIR" in err


def test_a_read_only_token_cache_is_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    """A data file the cache has not seen must be tokenized and cached: the cache's directory
    refusing the file is named, nothing is trained."""
    import os

    (tmp_path / "train.jsonl").write_text('{"text": "to be or not to be that is the question"}\n' * 50)
    (tmp_path / "validation.jsonl").write_text('{"text": "whether tis nobler in the mind"}\n' * 20)
    real = os.open

    def refusing_open(path, flags, *args, **kwargs):  # the cache's temporary file, created beside it
        if str(path).endswith(".tmp") and ".npy" in str(path):
            raise _eperm()
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    code, err = run_cli(
        TINY + ["--data", str(tmp_path / "*.jsonl"), "--precision", "fp32", "--out", str(tmp_path / "r")],
        capsys,
    )
    one_line(code, err)
    assert "cannot write in" in err and "cache" in err and "SCALE_LAB_HOME" in err
    assert not (tmp_path / "r").exists()


def test_figures_count_non_finite_values_by_kind_and_name_an_empty_metrics_file(tmp_path):
    import shutil

    from analysis.results import figures
    from analysis.results.run_set import MissingData, RunSet

    good = tmp_path / "runs" / "good"
    train(tiny_config(steps=4, eval_every=2), out=good, progress=False)
    odd = tmp_path / "runs" / "odd"
    shutil.copytree(good, odd)
    rows = [json.loads(line) for line in (odd / METRICS).read_text().splitlines()]
    losses = [r for r in rows if r["stat"] == "loss"]
    text = (odd / METRICS).read_text()
    for row, literal in zip(losses, ["Infinity", "Infinity", "-Infinity", "NaN"]):
        text = text.replace(json.dumps(row), json.dumps({**row, "value": 0.0}).replace("0.0", literal))
    (odd / METRICS).write_text(text)
    notes = RunSet(tmp_path / "runs").bad_row_notes()
    assert notes == ["note: run odd: 4 non-finite value(s): 1 NaN or null, 2 Infinity, 1 -Infinity (loss x4)"]
    empty = tmp_path / "empty" / "run"
    shutil.copytree(good, empty)
    (empty / METRICS).write_text("")
    with pytest.raises(MissingData, match="the metrics file of run is empty or unreadable"):
        figures.loss_curves(RunSet(tmp_path / "empty"))


def test_figures_stay_quiet_beside_a_font_list_without_matplotlib_s_fonts(tmp_path):
    """Another matplotlib of the same version may have written the user's font list without
    matplotlib's own fonts: a figure with math must still print nothing on stderr."""
    make_list = textwrap.dedent("""
        import sys
        from pathlib import Path
        import matplotlib
        from matplotlib import font_manager as fm
        fresh = fm.FontManager()
        own = str(Path(matplotlib.get_data_path()) / "fonts")
        fresh.ttflist = [f for f in fresh.ttflist if not f.fname.startswith(own)]
        fresh.afmlist = [f for f in fresh.afmlist if not f.fname.startswith(own)]
        fm.json_dump(fresh, Path(sys.argv[1]) / f"fontlist-v{fm.FontManager.__version__}.json")
    """)
    draw = textwrap.dedent("""
        import sys
        from analysis.results import style
        fig, (ax,) = style.figure()
        ax.set_title(r"$\\sigma^2 / \\|g\\|^2$")
        fig.savefig(sys.argv[1])
    """)
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    (tmp_path / "mpl").mkdir()
    made = subprocess.run(
        [sys.executable, "-c", make_list, str(tmp_path / "mpl")], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    done = subprocess.run(
        [sys.executable, "-c", draw, str(tmp_path / "f.png")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "f.png").stat().st_size > 0


def test_a_root_record_with_a_non_finite_number_is_never_written(tmp_path):
    from analysis.protocol.headline import write_record
    from analysis.recording import RecordingError

    write_record(tmp_path / "tuning.json", {"arms": {"scale": {"seed_noise": None}}})
    before = (tmp_path / "tuning.json").read_bytes()
    with pytest.raises(RecordingError, match="non-finite number"):
        write_record(tmp_path / "tuning.json", {"arms": {"scale": {"seed_noise": float("nan")}}})
    assert (tmp_path / "tuning.json").read_bytes() == before
