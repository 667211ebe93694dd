import os
import subprocess
import sys

import pytest
import torch

from analysis.optim.optimizer import NotShardable, check_shardable
from analysis.optim.recipes import build_optimizer
from analysis.recording import load_run, scalars
from analysis.training.checkpoint import CheckpointError, identity, load_latest, save
from analysis.training.config import ConfigError
from analysis.training.parallel import global_grad_norm
from tests.conftest import tiny_config


@pytest.mark.parametrize("name", ["scale", "col_norm", "sgd", "sign", "row_norm", "adamw"])
def test_row_local_recipes_may_run_sharded(tiny_model, name):
    check_shardable(build_optimizer(name, tiny_model), name)


@pytest.mark.parametrize(
    "name", ["spectral_norm", "swan", "stable_spam", "normuon", "muoneq", "rmnp", "muon"]
)
def test_whole_matrix_rules_may_run_sharded(tiny_model, name):
    # chains: gathered per matrix; torch's Muon: DTensor's own matmuls gather what they need
    check_shardable(build_optimizer(name, tiny_model), name)


@pytest.mark.parametrize("name, culprit", [("adafactor", "Adafactor")])
def test_whole_matrix_recipes_are_refused_under_fsdp(tiny_model, name, culprit):
    with pytest.raises(
        NotShardable,
        match=rf"optimizer '{name}' needs whole matrices \(.*{culprit}"
        r".*run it with --parallel ddp",
    ):
        check_shardable(build_optimizer(name, tiny_model), name)


def test_grad_norm_of_whole_gradients_is_the_global_two_norm(tiny_model):
    tiny_model(input_ids=torch.arange(8).view(1, 8), labels=torch.arange(8).view(1, 8)).loss.backward()
    expected = torch.cat([p.grad.flatten() for p in tiny_model.parameters()]).norm()
    assert global_grad_norm(tiny_model) == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"parallel": "zero3"}, "unknown parallel mode 'zero3'; choose ddp or fsdp"),
        ({"parallel": "fsdp", "instrument": "default"}, "instrument with --parallel ddp"),
    ],
)
def test_bad_parallel_settings_are_refused(fields, message):
    from analysis.instrument.schedule import InstrumentConfig

    if fields.get("instrument") == "default":
        fields = {**fields, "instrument": InstrumentConfig()}
    with pytest.raises(ConfigError, match=message):
        tiny_config(**fields).validate()


def test_a_checkpoint_of_the_other_state_layout_is_refused(tmp_path, tiny_model):
    opt = build_optimizer("scale", tiny_model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    config = tiny_config().to_dict()
    save(
        tmp_path, 2, tiny_model.state_dict(), opt.state_dict(), [{}], sched, identity(config, tiny_model), {}
    )
    assert load_latest(tmp_path, identity(config, tiny_model))["step"] == 2
    with pytest.raises(CheckpointError, match="layout 'plain', this run uses 'fsdp'.*--parallel fsdp"):
        load_latest(tmp_path, identity(config, tiny_model, layout="fsdp"))


def _torchrun(port, args, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            *args,
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _series(run, stat):
    frame = scalars(load_run(run), stat).drop_duplicates("step", keep="last")
    return frame.sort_values("step")["value"].tolist()


def test_fsdp2_with_scale_equals_ddp_with_scale_and_resumes(tmp_path):
    """2 processes on CPU (gloo), 2 micro-batches each: FSDP2 row shards (the embedding's dim-0
    norm all-reduced) give DDP's losses, gradient norms and evaluations; killing after step 2
    and resuming from the gathered checkpoint changes nothing."""
    args = [
        "-m",
        "analysis.training",
        "--model",
        "nano",
        "--optimizer",
        "scale",
        "--steps",
        "4",
        "--batch_size",
        "4",
        "--micro_batch_size",
        "1",
        "--seq_len",
        "32",
        "--eval_every",
        "2",
        "--eval_tokens",
        "300",
        "--save_every",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        "--grad_clip",
        "0.5",
    ]  # clipped by the global norm over both processes' shards
    _torchrun(29541, args, tmp_path / "ddp")
    _torchrun(29542, [*args, "--parallel", "fsdp"], tmp_path / "fsdp")
    assert sum(_series(tmp_path / "ddp", "grad_clipped")) >= 1
    for stat in ("loss", "grad_norm", "grad_clipped", "eval_loss"):
        ddp, fsdp = _series(tmp_path / "ddp", stat), _series(tmp_path / "fsdp", stat)
        assert len(ddp) == len(fsdp) >= 3
        assert max(abs(a - b) for a, b in zip(ddp, fsdp)) < 1e-6, stat
    saved = torch.load(tmp_path / "fsdp" / "ckpt-00000004.pt", weights_only=False)
    reference = torch.load(tmp_path / "ddp" / "ckpt-00000004.pt", weights_only=False)
    assert saved["identity"]["layout"] == "fsdp"
    for name, tensor in reference["model"].items():  # gathered, unsharded weights
        assert torch.allclose(saved["model"][name], tensor, atol=1e-6), name

    uninterrupted = _series(tmp_path / "fsdp", "loss")
    (tmp_path / "fsdp" / "ckpt-00000004.pt").unlink()  # as if killed after step 2
    (tmp_path / "fsdp" / "result.json").unlink()
    _torchrun(29543, [*args, "--parallel", "fsdp", "--resume"], tmp_path / "fsdp")
    assert _series(tmp_path / "fsdp", "loss") == uninterrupted


@pytest.mark.parametrize("name, port, rtol", [("spectral_norm", 29545, 1e-6), ("muon", 29548, 1e-4)])
def test_fsdp2_with_a_whole_matrix_rule_equals_ddp_and_resumes(tmp_path, name, port, rtol):
    """Newton-Schulz (every row of the update depends on the whole matrix) on 2 processes:
    spectral_norm's chain gathers each matrix, runs once and keeps its rows; torch's Muon runs
    on DTensors whose matmuls gather what they need (in bf16, so its tolerance is wider). The
    losses are DDP's; the sharded state checkpoints and resumes as SCALE's does."""
    args = [
        "-m",
        "analysis.training",
        "--model",
        "nano",
        "--optimizer",
        name,
        "--steps",
        "4",
        "--batch_size",
        "4",
        "--micro_batch_size",
        "1",
        "--seq_len",
        "32",
        "--eval_every",
        "2",
        "--eval_tokens",
        "300",
        "--save_every",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    _torchrun(port, args, tmp_path / "ddp")
    _torchrun(port + 1, [*args, "--parallel", "fsdp"], tmp_path / "fsdp")
    for stat in ("loss", "grad_norm", "eval_loss"):
        ddp, fsdp = _series(tmp_path / "ddp", stat), _series(tmp_path / "fsdp", stat)
        assert len(ddp) == len(fsdp) >= 3
        assert max(abs(a - b) / abs(a) for a, b in zip(ddp, fsdp)) < rtol, (stat, ddp, fsdp)
    uninterrupted = _series(tmp_path / "fsdp", "loss")
    (tmp_path / "fsdp" / "ckpt-00000004.pt").unlink()  # as if killed after step 2
    (tmp_path / "fsdp" / "result.json").unlink()
    _torchrun(port + 2, [*args, "--parallel", "fsdp", "--resume"], tmp_path / "fsdp")
    assert _series(tmp_path / "fsdp", "loss") == uninterrupted


def test_fsdp2_refuses_adafactor_before_training(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29544",
            "-m",
            "analysis.training",
            "--model",
            "nano",
            "--optimizer",
            "adafactor",
            "--parallel",
            "fsdp",
            "--steps",
            "2",
            "--batch_size",
            "2",
            "--seq_len",
            "32",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert "optimizer 'adafactor' needs whole matrices" in run.stderr
    assert not list((tmp_path / "run").glob("*.jsonl*"))


def test_importing_the_trainer_does_not_import_dtensor():
    """``torch.distributed.tensor`` takes over a second to import: the trainer's own modules
    leave it to the sharded run (``shard_model``); transformers still imports it when it
    builds a model, so this saves the second only where no model is built."""
    code = "import sys, analysis.training.cli; print('torch.distributed.tensor' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
