"""Every teaching notebook runs top to bottom in SMOKE mode, its assert cells included."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_there_are_seven_notebooks():
    assert len(NOTEBOOKS) == 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    from nbclient import NotebookClient

    monkeypatch.setenv("SCALE_LAB_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = jupytext.read(path)
    source = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "SMOKE" in notebook.cells[0].source and "assert " in notebook.cells[-1].source
    assert "import os" in source
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()


def test_a_notebook_renders_to_html_with_its_figures(tmp_path):
    """`scale-lab notebooks --html DIR`: executed pages with figures, for readers without Python."""
    pytest.importorskip("nbconvert")
    from analysis.notebooks import main

    assert main(["--html", str(tmp_path), "--smoke", "--only", "01"]) == 0
    page = (tmp_path / "01_momentum_quadratic.html").read_text()
    assert "Momentum" in page and page.count("data:image/png;base64") >= 1
    assert main(["--html", str(tmp_path), "--only", "99"]) == 2
