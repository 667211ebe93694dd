"""The trainer's config holds the optimizer's hyperparameters as one ``OptimizerConfig``; the
run record names them flat, as the flags do, and stays what it was before the nesting."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from analysis.optim.hyper import OptimizerConfig
from analysis.protocol.arms import SHARED_HYPER, Arm
from analysis.protocol.presets import PRESETS
from analysis.training.cli import config_from, parser
from analysis.training.config import RECORDED_HYPER, TrainConfig
from analysis.training.rundir import changed_settings

RECORDINGS = Path(__file__).resolve().parents[2] / "data" / "recordings"


def test_every_shipped_record_reads_back_to_the_same_record():
    records = sorted(RECORDINGS.glob("**/config.json"))
    assert records, "no shipped recordings to read"
    for path in records:
        written = json.loads(path.read_text())["config"]
        again = json.loads(json.dumps(TrainConfig.from_dict(written).to_dict()))  # as config.json holds it
        if written.get("instrument"):  # statistics added since a run fill in with their defaults
            again["instrument"] = {k: again["instrument"][k] for k in written["instrument"]}
        added = {k: v for k, v in again.items() if k not in written}  # settings added since
        assert added == {k: v for k, v in TrainConfig().to_dict().items() if k in added}, path
        again = {k: v for k, v in again.items() if k in written}
        assert list(again.items()) == list(written.items()), path


def test_the_record_holds_the_optimizer_settings_flat_and_any_other_one_a_run_sets():
    config = TrainConfig(optimizer="muon", hyper=OptimizerConfig(lr=1e-3, betas=(0.9, 0.95), ns_steps=3))
    record = config.to_dict()
    assert list(record)[: 2 + len(RECORDED_HYPER)] == ["model", "optimizer", *RECORDED_HYPER]
    assert record["adam_betas"] == (0.9, 0.95) and record["ns_steps"] == 3
    assert "eps" not in record and "rank" not in record  # left at their defaults
    assert TrainConfig.from_dict(json.loads(json.dumps(record))) == config
    # a resume that changes a setting outside the always-recorded ones is seen as a change
    changed = changed_settings(config, replace(config, hyper=replace(config.hyper, ns_steps=5)))
    assert changed == {"ns_steps": [3, 5]}


def test_the_optimizer_settings_are_hyper_not_fields_of_the_trainer_s_config():
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        TrainConfig(optimizer="adamw", lr=1e-3)
    assert not hasattr(TrainConfig(), "lr") and TrainConfig().hyper == OptimizerConfig()


def test_the_command_line_builds_the_same_nested_config():
    args = parser().parse_args(
        ["--optimizer", "adamw", "--lr", "1e-3", "--adam_betas", "0.9", "0.95", "--steps", "7"]
    )
    assert config_from(args) == TrainConfig(
        optimizer="adamw", steps=7, hyper=OptimizerConfig(lr=1e-3, betas=(0.9, 0.95))
    )


def test_a_preset_arm_differs_from_the_shared_hyperparameters_only_where_the_protocol_says():
    preset = PRESETS["quick"]
    assert preset.hyper == SHARED_HYPER
    config = preset.config(Arm("col_norm+all", "col_norm", "all"), 0, 3e-3, beta2=0.95)
    assert config.hyper == replace(SHARED_HYPER, lr=3e-3, momentum="all", betas=(0.9, 0.95))
