"""Gradient clipping by global norm (``--grad_clip``): torch's rule, recorded, part of the
experiment."""

import copy

import pytest
import torch

from analysis.recording import load_run, read_json, scalars
from analysis.training import main, train
from analysis.training.parallel import clip_gradients, global_grad_norm
from tests.conftest import tiny_config


def _with_grads(model):
    torch.manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clipping_is_torchs_rule(tiny_model, max_norm):
    theirs = _with_grads(copy.deepcopy(tiny_model))  # the same gradients (seeded)
    ours = _with_grads(tiny_model)
    norm = global_grad_norm(ours)
    clipped = clip_gradients(ours, max_norm, norm)
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    assert clipped == (max_norm < norm)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0)


def _series(run, stat):
    return scalars(load_run(run), stat).sort_values("step")["value"].tolist()


def test_a_clipped_run_records_the_norm_before_clipping_and_whether_it_clipped(tmp_path):
    free = train(tiny_config(optimizer="adamw", lr=3e-3), out=tmp_path / "free", progress=False)
    tight = train(
        tiny_config(optimizer="adamw", lr=3e-3, grad_clip=0.1), out=tmp_path / "tight", progress=False
    )
    loose = train(
        tiny_config(optimizer="adamw", lr=3e-3, grad_clip=1e6), out=tmp_path / "loose", progress=False
    )
    assert loose.losses == free.losses  # a norm never reached changes nothing
    assert tight.losses[0] == free.losses[0] and tight.losses[1:] != free.losses[1:]
    norms = _series(tmp_path / "tight", "grad_norm")
    assert norms[0] == _series(tmp_path / "free", "grad_norm")[0] > 0.1  # before clipping
    assert _series(tmp_path / "tight", "grad_clipped") == [float(n > 0.1) for n in norms]
    assert "grad_clipped" not in set(load_run(tmp_path / "free")["stat"])
    assert read_json(tmp_path / "tight" / "config.json")["config"]["grad_clip"] == 0.1


def test_clipping_acts_on_the_accumulated_gradient(tmp_path):
    one = train(tiny_config(optimizer="adamw", grad_clip=0.1, steps=3), progress=False)
    four = train(tiny_config(optimizer="adamw", grad_clip=0.1, steps=3, micro_batch_size=1), progress=False)
    assert four.losses == pytest.approx(one.losses, abs=2e-5)


def test_a_resume_that_changes_clipping_is_refused(tmp_path, capsys):
    argv = [
        "--model",
        "nano",
        "--steps",
        "4",
        "--batch_size",
        "4",
        "--seq_len",
        "32",
        "--eval_tokens",
        "256",
        "--save_every",
        "2",
        "--precision",
        "fp32",
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
    ]
    assert main([*argv, "--grad_clip", "1.0"]) == 0
    (tmp_path / "r" / "ckpt-00000004.pt").unlink()
    (tmp_path / "r" / "result.json").unlink()
    assert main([*argv, "--resume"]) == 2
    assert "grad_clip 1.0 -> None" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_bad_clipping_norm_is_one_line(tmp_path, capsys, value):
    assert (
        main(
            [
                "--model",
                "nano",
                "--steps",
                "1",
                "--grad_clip",
                value,
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grad_clip must be a norm > 0" in err
    assert not (tmp_path / "r").exists()


def test_help_lists_grad_clip(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--grad_clip NORM" in capsys.readouterr().out
