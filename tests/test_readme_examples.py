"""The README's "Use it on your model" examples run as a user would paste them (each block
that starts with ``# example:``), in a scratch directory; each leaves the recording it says."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(# example: ([^\n]+)\n.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_the_examples():
    assert {name for _, name in BLOCKS} >= {"first screen", "plain loop"}


@pytest.mark.parametrize("code, name", BLOCKS, ids=[name for _, name in BLOCKS])
def test_readme_example_runs(code, name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, f"README example '{name}'", "exec"), namespace)
    out = capsys.readouterr().out
    if name == "first screen":
        from analysis import load_run

        frame = load_run("runs/mine")
        assert set(frame.role.dropna()) == {"embedding", "hidden", "output", "vector"}
        assert sorted(frame.step.unique()) == [1, 2, 3] and "update_rms" in set(frame.stat)
    if name == "placement advice":
        advice = namespace["advice"]
        assert "predicted gain" in out and len(advice.table) == 5  # wte, wpe, two blocks, lm_head
        assert advice.state_bytes <= advice.budget_bytes and namespace["opt"].param_groups
    if name == "plain loop":
        assert "transformer.h.0.attn.c_attn.weight" in out and "Conv1D" in out
        grad_var = namespace["grad_var"]
        assert set(grad_var.role) == {"embedding", "hidden", "output", "vector"}
        assert (grad_var.value > 0).all() and grad_var.param.nunique() > 10
        from analysis.results.figures import RunSet, grad_variance_by_layer, render_all

        axis = grad_variance_by_layer(RunSet("runs")).axes[0]  # a line per role, drawn
        assert len([line for line in axis.get_lines() if len(line.get_xdata()) > 1]) >= 4
        made, _ = render_all("runs", "figs")
        drawn = {path.stem for path in made}
        assert {
            "grad_variance_by_layer",
            "grad_variance_with_momentum",
            "loss_curves",
            "update_spectra",
        } <= drawn
