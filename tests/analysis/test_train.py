import math
import os
import stat

import pytest
import torch

from analysis.config import ConfigError
from analysis.recording import load_run, scalars
from analysis.train import lr_lambda, main, train
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
    from analysis.train import build, resolve_device
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


def test_resume_continues_exactly(tmp_path):
    full = train(tiny_config(steps=6), out=tmp_path / "full", progress=False)
    train(tiny_config(steps=6, save_every=3), out=tmp_path / "part", progress=False)
    # simulate a crash after step 3: drop the final checkpoint and result
    (tmp_path / "part" / "ckpt-00000006.pt").unlink()
    (tmp_path / "part" / "result.json").unlink()
    resumed = train(tiny_config(steps=6, save_every=3), out=tmp_path / "part", resume=True,
                    progress=False)
    assert resumed.losses == full.losses[3:]


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt5"], "unknown model 'gpt5'; choose one of"),
    (["--optimizer", "adamz"], "unknown optimizer 'adamz'; choose one of"),
    (["--steps", "0"], "steps must be > 0"),
    (["--batch_size", "6", "--micro_batch_size", "4"], "not divisible"),
    (["--data", "/no/such/shards*.json"], "missing dataset path"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--momentum", "middle"], "unknown momentum placement"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path, capsys):
    code = main(["--model", "nano", "--steps", "2", "--batch_size", "4", "--seq_len", "32",
                 "--out", str(tmp_path / "r"), "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_existing_run_directory_is_refused_unless_overwrite(tmp_path, capsys):
    argv = ["--model", "nano", "--steps", "2", "--batch_size", "4", "--seq_len", "32",
            "--eval_tokens", "256", "--out", str(tmp_path / "r"), "--no-progress"]
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
