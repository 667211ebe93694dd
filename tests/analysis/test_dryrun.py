"""`scale-lab train --dry-run`: the paper's models sized on the meta device, no GPU."""

from dataclasses import replace

import pytest

from analysis.results.memory import analytic_gb
from analysis.training.cli import main
from analysis.training.config import TrainConfig
from analysis.training.dryrun import plan
from toy_models.llama import PAPER_MODELS


@pytest.mark.parametrize("model", PAPER_MODELS)
@pytest.mark.parametrize("recipe", ["sgd", "scale", "muon", "adamw"])
def test_weights_and_state_in_bf16_are_the_analytic_memory_table(model, recipe):
    """Pure bf16 on one GPU counts as the memory table does: 2 bytes x (parameters + state),
    here from the model built on the meta device and the recipe built on it."""
    sized = plan(TrainConfig(model=model, optimizer=recipe, precision="bf16", batch_size=8, seq_len=256))
    parts = sized.per_gpu("ddp")
    assert (parts["weights"] + parts["state"]) / 1e9 == pytest.approx(
        analytic_gb(recipe, model, "implemented"), rel=1e-12
    )


def test_fsdp_divides_what_it_shards_and_ddp_keeps_it_whole():
    sized = plan(
        TrainConfig(
            model="1b",
            optimizer="scale",
            precision="bf16-mixed",
            batch_size=64,
            micro_batch_size=4,
            seq_len=256,
        ),
        gpus=8,
    )
    ddp, fsdp = sized.per_gpu("ddp"), sized.per_gpu("fsdp")
    for part in ("weights", "gradients", "state"):
        assert fsdp[part] * 8 == pytest.approx(ddp[part])
    assert ddp["weights"] == 4 * sized.parameters  # fp32 master weights
    assert fsdp["activations"] == ddp["activations"] > 0  # one micro-batch of 4 x 256 either way
    assert sized.flops_per_step > 6 * sized.parameters * 64 * 256 * 0.9


def test_the_command_prints_the_plan_and_refuses_a_bad_split(capsys):
    assert (
        main(
            [
                "--dry-run",
                "--model",
                "7b",
                "--optimizer",
                "scale",
                "--gpus",
                "8",
                "--batch_size",
                "512",
                "--micro_batch_size",
                "8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "7b, scale, bf16-mixed, 8 GPU(s)" in out and "fsdp" in out and "TFLOPs" in out
    assert main(["--dry-run", "--model", "60m", "--gpus", "3", "--batch_size", "8"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["--dry-run", "--model", "60m", "--optimizer", "adafactor"]) == 0
    assert "fsdp refuses adafactor" in capsys.readouterr().out


def test_a_gpu_preset_is_sized_on_this_cpu_machine(capsys):
    from analysis.reproduce import main as reproduce

    assert reproduce(["--preset", "paper-60m", "--dry-run", "--gpus", "4", "--arms", "scale", "adamw"]) == 0
    out = capsys.readouterr().out
    assert out.count("dry run: 60m") == 2 and "60m, adamw" in out


def test_the_dry_run_sizes_the_model_the_trainer_builds():
    import torch

    from analysis.training.setup import build
    from toy_models.llama import load_config

    config = TrainConfig(model="micro2k", optimizer="scale", batch_size=4, seq_len=32)
    model = build(config, torch.device("cpu"), "fp32")[2]
    assert plan(config).parameters == sum(p.numel() for p in model.parameters())
    # the paper's C4 path tokenizes with T5 (32100 tokens): 100 more rows in the embedding and
    # in the untied output layer than the config's 32000, as the trainer builds it
    c4 = plan(TrainConfig(model="60m", data="c4", batch_size=8, seq_len=256))
    bundled = plan(TrainConfig(model="60m", batch_size=8, seq_len=256))
    assert c4.parameters - bundled.parameters == 2 * 100 * load_config("60m").hidden_size


def test_a_whole_matrix_rule_counts_its_gathered_matrix_under_fsdp():
    from analysis.training.config import TrainConfig
    from analysis.training.dryrun import plan
    from toy_models.llama import load_config, matrix_shapes

    common = dict(model="60m", batch_size=64, micro_batch_size=8, seq_len=256, precision="bf16-mixed")
    scale, spectral = (
        plan(TrainConfig(optimizer=name, **common), gpus=8) for name in ("scale", "spectral_norm")
    )
    assert scale.gathered_elements == 0  # SCALE's rules stay on the row blocks
    largest = max(s[0] * s[1] for _, _, s in matrix_shapes(load_config("60m")) if len(s) == 2)
    assert spectral.gathered_elements == largest == 32000 * 512  # Newton-Schulz on every matrix
    extra = spectral.per_gpu("fsdp")["extra"] - scale.per_gpu("fsdp")["extra"]
    assert extra == 16 * largest and spectral.shardable


def test_the_dry_run_counts_momentum_placed_per_matrix_and_lists_the_placements():
    """col_norm with momentum on lm_head.weight by name keeps SCALE's state; the table lists
    the ladder's placements beside it (the memory side of ``scale-lab advise``)."""
    from analysis.optim.hyper import OptimizerConfig

    scale = plan(TrainConfig(model="60m", optimizer="scale", batch_size=8, seq_len=256))
    named = TrainConfig(
        model="60m",
        optimizer="col_norm",
        hyper=OptimizerConfig(momentum_on=("lm_head.weight",)),
        batch_size=8,
        seq_len=256,
    )
    assert plan(named).state_elements == scale.state_elements
    assert (
        scale.placements["output"] == scale.state_elements and scale.placements["none"] < scale.state_elements
    )
    assert (
        "momentum placements" in scale.table()
        and not plan(replace(named, optimizer="adamw", hyper=OptimizerConfig())).placements
    )
