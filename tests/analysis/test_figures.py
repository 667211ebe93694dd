from pathlib import Path

import pytest

from analysis.protocol.presets import REFERENCE
from analysis.recording import Recorder
from analysis.results import figures


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference recordings not built")
def test_every_registered_figure_renders_from_the_shipped_recordings(tmp_path):
    made, problems = figures.render_all(REFERENCE, tmp_path)
    assert problems == []
    assert {p.name for p in made} == {f"{n}.{ext}" for n in figures.REGISTRY for ext in ("png", "pdf")}
    assert all(p.stat().st_size > 5_000 for p in made)


def test_empty_or_foreign_directory_names_the_problem_and_still_draws_the_rest(tmp_path):
    (tmp_path / "runs" / "notes").mkdir(parents=True)
    (tmp_path / "runs" / "notes" / "readme.txt").write_text("not a run")
    made, problems = figures.render_all(tmp_path / "runs", tmp_path / "out")
    assert [p.name for p in made] == ["momentum_quadratic.png", "momentum_quadratic.pdf"]
    assert any("no usable run directories under" in p for p in problems)
    assert figures.main(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_a_missing_statistic_is_named_and_other_figures_are_made(tmp_path):
    # an uninstrumented finished run: loss curves and bars work, variance figures cannot
    with Recorder(tmp_path / "adamw" / "seed0") as rec:
        rec.write_config({"config": {"optimizer": "adamw", "label": "adamw", "model": "nano",
                                     "seed": 0, "lr": 1e-3}})
        for step in range(1, 5):
            rec.log(step, {"loss": 9 - step})
        rec.log(4, {"eval_loss": 5.0})
        rec.finish({"first_eval_loss": 9.0, "final_eval_loss": 5.0, "optimizer_state_bytes": 8})
    made, problems = figures.render_all(tmp_path, tmp_path / "out")
    names = {Path(p).stem for p in made}
    assert {"loss_curves", "normalization_ablation", "memory_vs_perplexity"} <= names
    variance = [p for p in problems if p.startswith("grad_variance_by_layer")]
    assert variance and "no 'grad_var' rows" in variance[0] and "instrument" in variance[0]


def test_unknown_figure_is_an_error(tmp_path, capsys):
    assert figures.main(["--runs", str(tmp_path), "--only", "fig9"]) == 2
    assert "unknown figure(s) ['fig9']" in capsys.readouterr().err
