import json

import pytest

from analysis.protocol.arms import select_arms
from analysis.protocol.presets import PRESETS
from analysis.protocol.runner import Runner
from analysis.protocol.tuning import run_preset
from analysis.recording import SELECTION, TUNING, RecordingError, load_run, scalars
from analysis.results.curate import curate
from analysis.results.root import find_runs, load_runs


def test_curated_runs_read_back_like_the_originals_and_are_smaller(tmp_path):
    src = tmp_path / "full"
    run_preset(PRESETS["smoke"], src, select_arms(["scale"]), Runner(1))
    total = curate(src, tmp_path / "small")
    run = tmp_path / "small" / "scale" / "seed0"
    assert not list(run.glob("ckpt-*")) and (run / "metrics.jsonl.gz").exists()
    original, curated = load_run(src / "scale" / "seed0"), load_run(run)
    assert scalars(curated, "loss")["value"].tolist() == scalars(original, "loss")["value"].tolist()
    assert set(curated["stat"]) < set(original["stat"]) and "grad_var" in set(curated["stat"])
    full_size = sum(p.stat().st_size for p in (src / "scale" / "seed0").glob("*.jsonl"))
    assert total < full_size / 3
    vectors = load_runs(tmp_path / "small", "spectra")
    assert {"token_frequency", "grad_row_rms", "update_spectrum"} <= set(vectors["stat"])


def test_curating_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(RecordingError, match="no finished runs under"):
        curate(tmp_path, tmp_path / "out")


def test_a_tuned_root_ships_its_reported_runs_and_the_tuning(tmp_path):
    src = tmp_path / "full"
    run_preset(PRESETS["smoke"], src, select_arms(["scale", "adamw"]), Runner(1))
    (src / SELECTION).write_text(json.dumps({"runs": ["scale/seed0"]}))  # adamw: a sweep point
    (src / TUNING).write_text(json.dumps({"arms": {}}))
    (src / "order" / "short").mkdir(parents=True)
    (src / "order" / "short" / TUNING).write_text("{}")
    curate(src, tmp_path / "small")
    assert [r.relative_to(tmp_path / "small").as_posix() for r in find_runs(tmp_path / "small")] == [
        "scale/seed0"
    ]
    assert not (tmp_path / "small" / "adamw").exists()
    assert (tmp_path / "small" / TUNING).exists() and (
        tmp_path / "small" / "order" / "short" / TUNING
    ).exists()


def test_the_rows_beside_the_arms_ship_with_their_losses_only(tmp_path):
    src = tmp_path / "full"
    run_preset(PRESETS["smoke"], src, select_arms(["scale", "adamw"]), Runner(1))
    selection = {"runs": ["scale/seed0"], "rows": {"scale+clip1": ["adamw/seed0"]}}
    (src / SELECTION).write_text(json.dumps(selection))
    curate(src, tmp_path / "small")
    row = tmp_path / "small" / "adamw" / "seed0"
    assert (row / "result.json").exists()
    assert load_run(row)["param"].isna().all()  # run-level rows alone: the report reads its loss


def test_a_further_setting_ships_its_reported_runs_for_the_claims_to_pair(tmp_path):
    from analysis.results.ladder_claims import setting_results

    src = tmp_path / "full"
    setting = src / "order" / "short"
    run_preset(PRESETS["smoke"], setting, select_arms(["scale", "col_norm"]), Runner(1))
    (setting / SELECTION).write_text(json.dumps({"runs": ["scale/seed0"]}))  # col_norm: a sweep point
    (setting / TUNING).write_text("{}")
    curate(src, tmp_path / "small")
    shipped = tmp_path / "small" / "order" / "short"
    assert (shipped / SELECTION).exists() and (shipped / TUNING).exists()
    assert [r.relative_to(shipped).as_posix() for r in find_runs(shipped)] == ["scale/seed0"]
    assert not (shipped / "col_norm").exists()
    assert list(setting_results(tmp_path / "small")["short"]["label"]) == ["scale"]


def test_curation_rounds_statistics_drops_timings_and_can_keep_scalars_only(tmp_path):
    src = tmp_path / "full"
    run_preset(PRESETS["smoke"], src, select_arms(["scale"]), Runner(1))
    curate(src, tmp_path / "small")
    original, curated = load_run(src / "scale" / "seed0"), load_run(tmp_path / "small" / "scale" / "seed0")
    assert "step_time" in set(original["stat"]) and "step_time" not in set(curated["stat"])
    assert not any(s.startswith("lr/") for s in curated["stat"]) and "lr" in set(curated["stat"])
    per_param = curated[curated["param"].notna()]
    assert per_param["value"].map(lambda v: v == float(f"{v:.6g}")).all()  # 6 significant digits
    again = curate(tmp_path / "small", tmp_path / "scalars", scalars_only=True)  # a curated set again
    light = load_run(tmp_path / "scalars" / "scale" / "seed0")
    assert (
        light["param"].isna().all()
        and scalars(light, "loss")["value"].tolist() == scalars(original, "loss")["value"].tolist()
    )
    assert not (tmp_path / "scalars" / "scale" / "seed0" / "spectra.jsonl.gz").exists() and again > 0


def test_a_curated_result_holds_no_path_of_the_machine_that_trained_it(tmp_path):
    src = tmp_path / "full"
    run_preset(PRESETS["smoke"], src, select_arms(["scale"]), Runner(1))
    result = src / "scale" / "seed0" / "result.json"
    # an older trainer wrote its run directory into result.json
    result.write_text(json.dumps({**json.loads(result.read_text()), "run_dir": str(result.parent)}))
    curate(src, tmp_path / "small")
    shipped = json.loads((tmp_path / "small" / "scale" / "seed0" / "result.json").read_text())
    assert (
        "run_dir" not in shipped
        and shipped["final_eval_loss"] == json.loads(result.read_text())["final_eval_loss"]
    )


def test_no_shipped_file_holds_a_path_of_the_machine_that_made_it():
    import re
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "data"
    absolute = re.compile(r'"(/(?:work|home|root|tmp|Users|mnt)/[^"]*)"')
    found = [
        f"{p.relative_to(data)}: {m.group(1)}"
        for p in [*data.glob("recordings/**/*.json"), *data.glob("sweeps/**/*.json")]
        for m in [absolute.search(p.read_text())]
        if m
    ]
    assert not found, found[:5]
