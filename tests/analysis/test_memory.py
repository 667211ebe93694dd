import pytest

from analysis.optim.recipes import recipe_names
from analysis.results import paper
from analysis.results.memory import main, measured_state, paper_figure
from toy_models.llama import CPU_MODELS, load_config, parameter_counts


@pytest.mark.parametrize("recipe, model", sorted(paper.MEMORY_GB))
def test_the_paper_convention_reproduces_every_printed_figure(recipe, model):
    """Exactly, at the precision the paper prints (13.476 has three decimals)."""
    printed = paper.MEMORY_GB[recipe, model]
    digits = max(2, len(f"{printed}".split(".")[1]))
    assert paper_figure(recipe, model, digits) == printed


@pytest.mark.parametrize("model", CPU_MODELS)
@pytest.mark.parametrize("recipe", recipe_names())
def test_declared_state_equals_measured(recipe, model):
    """Each recipe's declared state per role (the one source of the memory table, the recipe
    list and the report) equals the elements its optimizer really holds after a step."""
    m = measured_state(recipe, model)
    assert m["elements"] == m["analytic"]
    assert m["bytes"] >= 4 * m["elements"]


def test_scale_state_is_the_output_layer_only():
    m = measured_state("scale", "nano")
    counts = parameter_counts(load_config("nano"))
    assert m["elements"] == counts["output"] + 2 * counts["vector"]


def test_cli_prints_the_table(capsys, tmp_path):
    assert main(["--no-measure", "--out", str(tmp_path / "m.txt")]) == 0
    out = capsys.readouterr().out
    assert "scale" in out and "13.74" in out and "40.43" in out
    assert (tmp_path / "m.txt").read_text().strip() == out.strip()


def test_memory_shows_the_analytic_table_before_it_starts_measuring(monkeypatch, capsys):
    """`scale-lab memory` printed nothing for minutes; now the paper's table is out (flushed)
    when the first model is instantiated, and measured rows follow one by one."""
    from analysis.results import memory

    seen = []

    def first_measurement(recipe, model, steps=1):
        seen.append(capsys.readouterr().out)  # what the user has on screen at this moment
        raise KeyboardInterrupt  # no need to train anything here

    monkeypatch.setattr(memory, "measured_state", first_measurement)
    with pytest.raises(KeyboardInterrupt):
        memory.main([])
    assert "as the paper counts it" in seen[0] and "adamw" in seen[0]
    assert "measured after one step" in seen[0] and "analytic elems" in seen[0]


def test_the_paper_table_prints_before_transformers_or_dtensor_are_imported():
    """``scale-lab memory`` shows the analytic table at once: building it reads the config files
    (no ``LlamaConfig``, whose import takes seconds) and ``import analysis.optim`` does not pull
    in ``torch.distributed.tensor``."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; from analysis.results.memory import paper_table; table = paper_table(); "
        "print(len(table.splitlines()), sorted(m for m in ('transformers', "
        "'torch.distributed.tensor') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.split(maxsplit=1)
    assert int(out[0]) > 5 and out[1].strip() == "[]"
