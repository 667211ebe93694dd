import math
import os
import stat

import pytest
import torch

from analysis.recording import load_run, scalars
from analysis.training import main, train
from analysis.training.config import ConfigError
from analysis.training.lr_schedule import lr_lambda
from tests.conftest import tiny_config


def test_same_seed_gives_bitwise_identical_losses(tmp_path):
    a = train(tiny_config(), out=tmp_path / "a", progress=False)
    b = train(tiny_config(), out=tmp_path / "b", progress=False)
    assert a.losses == b.losses
    c = train(tiny_config(seed=1), out=tmp_path / "c", progress=False)
    assert c.losses != a.losses


def test_accumulation_matches_one_big_batch(tmp_path):
    one = train(tiny_config(steps=3), progress=False)
    four = train(tiny_config(steps=3, micro_batch_size=1), progress=False)
    assert four.losses == pytest.approx(one.losses, abs=2e-5)


def test_run_directory_records_config_metrics_and_result(tmp_path):
    result = train(tiny_config(), out=tmp_path / "run", progress=False)
    frame = load_run(tmp_path / "run")
    loss = scalars(frame, "loss")
    assert list(loss["step"]) == list(range(1, 7))
    assert loss["value"].tolist() == pytest.approx(result.losses)
    evals = scalars(frame, "eval_loss")
    assert list(evals["step"]) == [0, 3, 6]
    ppl = scalars(frame, "eval_perplexity")["value"].iloc[-1]
    assert ppl == pytest.approx(math.exp(result.final_eval_loss))
    assert (tmp_path / "run" / "result.json").exists()
    assert result.final_eval_loss < result.first_eval_loss


def test_schedule_warms_up_then_decays_to_floor():
    f = lr_lambda(tiny_config(steps=100, warmup_steps=10))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.55, abs=1e-9) and f(100) == pytest.approx(0.1)


def test_vector_group_follows_schedule_with_its_own_peak(tmp_path):
    from analysis.training.setup import build

    config = tiny_config(lr=1e-3, adam_lr=2e-2, steps=20, warmup_steps=5)
    _, _, model, opt = build(config, torch.device("cpu"), "fp32")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config))
    f = lr_lambda(config)
    for step in range(20):
        lrs = {g["label"]: g["lr"] for g in opt.param_groups}
        assert lrs["vector"] == pytest.approx(2e-2 * f(step))
        assert lrs["hidden"] == pytest.approx(1e-3 * f(step))
        opt.step()
        sched.step()


@pytest.mark.parametrize("optimizer", ["scale", "muon"])  # muon: a PartitionedOptimizer's state
def test_resume_continues_exactly(tmp_path, optimizer):
    full = train(tiny_config(steps=6, optimizer=optimizer), out=tmp_path / "full", progress=False)
    train(tiny_config(steps=6, save_every=3, optimizer=optimizer), out=tmp_path / "part", progress=False)
    # simulate a crash after step 3: drop the final checkpoint and result
    (tmp_path / "part" / "ckpt-00000006.pt").unlink()
    (tmp_path / "part" / "result.json").unlink()
    resumed = train(
        tiny_config(steps=6, save_every=3, optimizer=optimizer),
        out=tmp_path / "part",
        resume=True,
        progress=False,
    )
    assert resumed.losses == full.losses[3:]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gpt5"], "unknown model 'gpt5'; choose one of"),
        (["--optimizer", "adamz"], "unknown optimizer 'adamz'; choose one of"),
        (["--steps", "0"], "steps must be > 0"),
        (["--batch_size", "6", "--micro_batch_size", "4"], "not divisible"),
        (["--data", "/no/such/shards*.json"], "missing dataset path"),
        (["--lr", "-1"], "lr must be > 0"),
        (["--momentum", "middle"], "unknown momentum placement"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, tmp_path, capsys):
    code = main(
        [
            "--model",
            "nano",
            "--steps",
            "2",
            "--batch_size",
            "4",
            "--seq_len",
            "32",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
            *args,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_existing_run_directory_is_refused_unless_overwrite(tmp_path, capsys):
    argv = [
        "--model",
        "nano",
        "--steps",
        "2",
        "--batch_size",
        "4",
        "--seq_len",
        "32",
        "--eval_tokens",
        "256",
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
    ]
    assert main(argv) == 0
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert main(argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before  # nothing lost
    assert main(argv + ["--overwrite"]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IREAD | stat.S_IEXEC)
    assert main(["--model", "nano", "--steps", "1", "--out", str(locked / "r"), "--no-progress"]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(["--model", "nano", "--steps", "1", "--out", str(target / "r"), "--no-progress"]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def _losses(run):
    from analysis.recording import load_run, scalars

    return scalars(load_run(run), "loss").sort_values("step")["value"].tolist()


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo), instrumented: same losses as one process (to
    1e-6) and the same per-layer statistics."""
    import subprocess
    import sys

    args = [
        "-m",
        "analysis.training",
        "--model",
        "nano",
        "--steps",
        "4",
        "--batch_size",
        "4",
        "--micro_batch_size",
        "1",
        "--seq_len",
        "32",
        "--eval_every",
        "0",
        "--eval_tokens",
        "256",
        "--no-progress",
        "--device",
        "cpu",
        "--instrument",
        "--precision",
        "fp32",
    ]  # pinned: "auto" measures the machine, and a single process may pick bf16
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, *args, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29531",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-6
    # the instrumentation sees the same global gradient: per-layer statistics agree too
    stats = ["grad_norm", "grad_var", "update_rms", "update_row_rms_cv"]
    frames = []
    for name in ("one", "two"):
        frame = load_run(tmp_path / name)
        frame = frame[frame["param"].notna() & frame["stat"].isin(stats)]
        frames.append(frame.set_index(["step", "param", "stat"])["value"].sort_index())
    assert len(frames[0]) > 100 and frames[0].index.equals(frames[1].index)
    # relative 1e-4, plus 1e-6 absolute for statistics that are zero up to rounding (SCALE's
    # update row-RMS spread is ~1e-8 by construction)
    excess = (frames[0] - frames[1]).abs() - (1e-4 * frames[0].abs() + 1e-6)
    assert excess.max() <= 0


def test_batch_not_divisible_by_world_size_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from analysis.training import train

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="not divisible by micro_batch_size 1 x world size 3"):
        train(tiny_config(batch_size=4, micro_batch_size=1), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_kill_then_resume_equals_uninterrupted_bitwise(tmp_path):
    """10 steps, kill -9, --resume, 10 more == 20 uninterrupted steps (CPU, bitwise)."""
    import signal
    import subprocess
    import sys
    import time

    args = [
        "-m",
        "analysis.training",
        "--model",
        "nano",
        "--steps",
        "20",
        "--batch_size",
        "8",
        "--seq_len",
        "64",
        "--eval_every",
        "0",
        "--eval_tokens",
        "256",
        "--save_every",
        "10",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert subprocess.run([sys.executable, *args, "--out", str(tmp_path / "full")]).returncode == 0
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, *args, "--out", str(run)])
    deadline = time.time() + 120
    while not (run / "ckpt-00000010.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # if the run outpaced the kill, put it back in the state a kill after step 10 leaves
    (run / "ckpt-00000020.pt").unlink(missing_ok=True)
    (run / "result.json").unlink(missing_ok=True)
    resumed = subprocess.run([sys.executable, *args, "--out", str(run), "--resume"])
    assert resumed.returncode == 0
    full = _losses(tmp_path / "full")
    # rows logged after step 10 by the killed process are superseded by the resumed ones
    frame = scalars(load_run(run), "loss")
    assert not frame["step"].duplicated().any()
    assert frame.sort_values("step")["value"].tolist() == full


def test_resuming_with_another_optimizer_is_refused_and_keeps_the_run(tmp_path, capsys):
    assert (
        main(
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
                "--save_every",
                "2",
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
        == 0
    )
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}
    code = main(
        [
            "--model",
            "nano",
            "--optimizer",
            "adamw",
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
            "--resume",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "would change the experiment (optimizer 'scale' -> 'adamw'" in err
    assert "Traceback" not in err
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}
    assert before == after


def test_the_seed_release_flags_are_accepted_with_their_meaning():
    from analysis.training.cli import parser, translate_paper_flags

    args = translate_paper_flags(
        parser().parse_args(
            "--model_config configs/llama_350m.json --total_batch_size 512 --micro_batch_size 128 "
            "--num_training_steps 60000 --max_length 256 --dtype bfloat16 --scheduler cosine".split()
        )
    )
    assert (args.model, args.batch_size, args.micro_batch_size, args.steps, args.seq_len, args.precision) == (
        "350m",
        512,
        128,
        60000,
        256,
        "bf16",
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheduler", "linear"], "--scheduler 'linear' is not implemented"),
        (["--model_config", "my_model.yaml"], "is not a configs/llama_<size>.json path"),
    ],
)
def test_unsupported_seed_flags_are_refused_clearly(args, message, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "r"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_streamed_local_shards_train_and_resume_exactly(tmp_path):
    """The C4 code path on local files of C4's format: train, checkpoint the stream position,
    resume, and continue exactly as the uninterrupted run."""
    from tests.toy_models.test_stream import _c4_shards

    pattern = _c4_shards(tmp_path, 2, 300)
    _c4_shards(tmp_path, 1, 40, split="validation")
    config = tiny_config(data=pattern, stream=True, steps=6, eval_every=3, eval_tokens=256, save_every=3)
    full = train(config, out=tmp_path / "full", progress=False)
    assert full.final_eval_loss < full.first_eval_loss
    train(config, out=tmp_path / "part", progress=False)
    (tmp_path / "part" / "ckpt-00000006.pt").unlink()
    (tmp_path / "part" / "result.json").unlink()
    saved = torch.load(tmp_path / "part" / "ckpt-00000003.pt", weights_only=False)
    assert saved["data"][0]["next_step"] == 3 and saved["data"][0]["position"] is not None
    resumed = train(config, out=tmp_path / "part", resume=True, progress=False)
    assert resumed.losses == full.losses[3:]


def test_a_glob_without_validation_files_is_refused_before_training(tmp_path, capsys):
    from tests.toy_models.test_stream import _c4_shards

    pattern = _c4_shards(tmp_path, 1, 10, validation=False)
    assert (
        main(["--data", pattern, "--stream", "--steps", "2", "--out", str(tmp_path / "r"), "--no-progress"])
        == 2
    )
    assert "missing dataset path: nothing matches" in capsys.readouterr().err
    assert not list((tmp_path / "r").glob("*.jsonl*"))
