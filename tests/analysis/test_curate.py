import pytest

from analysis.recording import load_run, load_runs, scalars
from analysis.reproduce import PRESETS, run_preset, select_arms
from analysis.results.curate import curate


def test_curated_runs_read_back_like_the_originals_and_are_smaller(tmp_path):
    src = tmp_path / "full"
    run_preset(PRESETS["smoke"], src, select_arms(["scale"]), progress=False)
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
    with pytest.raises(SystemExit, match="no finished runs under"):
        curate(tmp_path, tmp_path / "out")
