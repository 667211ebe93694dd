import pytest

from analysis.memory import analytic_gb, main, measured_state

# DESIGN §6, GB = 2 bytes x (parameters + state elements) / 1e9
PAPER = [("sgd", "7b", 13.476), ("scale", "7b", 13.74), ("apollo_mini", "7b", 14.53),
         ("apollo", "7b", 16.14), ("muon", "7b", 26.95), ("adamw", "7b", 40.43),
         ("sgd", "1b", 2.68), ("scale", "1b", 2.81), ("apollo_mini", "1b", 3.20),
         ("galore", "1b", 4.76), ("muon", "1b", 5.36), ("adamw", "1b", 8.04),
         ("scale", "60m", 0.15), ("scale", "130m", 0.32), ("scale", "350m", 0.80),
         ("adamw", "60m", 0.35), ("adamw", "130m", 0.81), ("adamw", "350m", 2.21),
         ("muon", "60m", 0.23), ("muon", "130m", 0.54), ("muon", "350m", 1.47),
         ("swan", "1b", 3.20)]


@pytest.mark.parametrize("recipe, model, gb", PAPER)
def test_analytic_table_reproduces_the_paper(recipe, model, gb):
    assert abs(analytic_gb(recipe, model, "paper") - gb) <= 0.01


@pytest.mark.parametrize("recipe", ["scale", "sgd", "sgd_momentum", "col_norm", "sign", "adamw",
                                    "muon", "adafactor", "spectral_norm", "swan", "stable_spam"])
def test_measured_state_equals_analytic(recipe):
    m = measured_state(recipe, "nano")
    assert m["elements"] == m["analytic"]
    assert m["bytes"] >= 4 * m["elements"]


def test_scale_state_is_the_output_layer_only():
    from toy_models.llama import load_config, parameter_counts
    m = measured_state("scale", "nano")
    counts = parameter_counts(load_config("nano"))
    assert m["elements"] == counts["output"] + 2 * counts["vector"]


def test_cli_prints_the_table(capsys, tmp_path):
    assert main(["--no-measure", "--out", str(tmp_path / "m.txt")]) == 0
    out = capsys.readouterr().out
    assert "scale" in out and "13.74" in out and "40.43" in out
    assert (tmp_path / "m.txt").read_text().strip() == out.strip()
