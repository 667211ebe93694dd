"""Every teaching notebook runs top to bottom in SMOKE mode, its assert cells included."""

import re
from pathlib import Path

import pytest

from analysis.results.captions import CAPTIONS
from analysis.results.figures import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_there_are_eight_notebooks():
    assert len(NOTEBOOKS) == 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    from analysis.notebooks import executor

    monkeypatch.setenv("SCALE_LAB_SMOKE", "1")  # small and fast; the sliders stay live
    monkeypatch.setenv("SCALE_LAB_SOLUTIONS", "1")  # the exercises with their solutions filled in
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as in JupyterLab
    notebook = jupytext.read(path)
    source = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    # the title first, the environment cell under it, the checks last
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# 0")
    assert "SMOKE" in notebook.cells[1].source and "assert " in notebook.cells[-1].source
    assert "import os" in source
    executor(notebook, 600, ROOT).execute()
    # quiet: no warning or log line reaches a cell's output (known ones are filtered at their source)
    noise = [
        o["text"][:200]
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("name") == "stderr"
    ]
    assert not noise, noise
    # every figure is drawn through figures.show, and its caption is under it in the output
    direct = re.findall(rf"figures\.({'|'.join(REGISTRY)})\(", source)
    assert not direct, f"draw {direct} with figures.show(name, ...) so the caption is shown"
    shown = re.findall(r'figures\.show\("(\w+)"', source)
    markdown = [
        o.get("data", {}).get("text/markdown", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    ]
    for name in shown:
        assert any(CAPTIONS[name] in text for text in markdown), f"{name}: no caption in the output"
    # every graded exercise ran and passed with the solution; every explorer drew its figure
    printed = "".join(
        o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    for name in re.findall(r'exercises\.grade\("(\w+)"', source):
        assert f"exercise {name!r}: correct" in printed, name
    # every figure cell drew; an explorer is live (sliders in SMOKE too) and its figure is in
    # the widget state nbclient stores
    state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    drawn_in_widgets = sum(
        any("image/png" in o.get("data", {}) for o in model["state"].get("outputs", []))
        for model in state.get("state", {}).values()
    )
    explorers = [c for c in notebook.cells if c.cell_type == "code" and "widgets.explore(" in c.source]
    for cell in explorers:
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.outputs), (
            f"no sliders under {cell.source!r}"
        )
    assert drawn_in_widgets >= len(explorers), (drawn_in_widgets, len(explorers))
    for cell in (c for c in notebook.cells if c.cell_type == "code" and "figures.show(" in c.source):
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), (
            f"no figure drawn by {cell.source!r}"
        )


def test_each_notebook_teaches_with_exercises():
    """1-3 predict-then-check cells and at least one graded implement exercise per notebook,
    whose stub raises until the reader writes it."""
    jupytext = pytest.importorskip("jupytext")
    for path in NOTEBOOKS:
        cells = jupytext.read(path).cells
        text = "\n".join(c.source for c in cells)
        predicts = sum("Predict" in c.source for c in cells if c.cell_type == "markdown")
        assert 1 <= predicts <= 3, (path.name, predicts)
        graded = re.findall(r'exercises\.grade\("(\w+)", (\w+)\)', text)
        assert graded, f"{path.name}: no graded exercise"
        for _, function in graded:
            assert re.search(rf"def {function}\(.*\):\n    raise NotImplementedError", text), function


def test_every_prediction_is_checked_by_a_cell_then_answered():
    """A Predict cell never holds its answer; a code cell checks it next, and the answer
    follows: printed from the numbers (``Answer:``) or in the prose after the check."""
    jupytext = pytest.importorskip("jupytext")
    for path in NOTEBOOKS:
        cells = jupytext.read(path).cells
        for i, cell in enumerate(cells):
            if cell.cell_type != "markdown" or "**Predict" not in cell.source:
                continue
            asked = cell.source[cell.source.index("**Predict") :]
            assert "Answer" not in asked and "\n\n" not in asked.strip(), (path.name, "answer given away")
            assert cells[i + 1].cell_type == "code", (path.name, "no check cell after the prediction")
            after = cells[i + 1 : i + 4]
            assert any("Answer:" in c.source for c in after if c.cell_type == "code") or any(
                c.cell_type == "markdown" for c in after[1:]
            ), (path.name, "no answer")


def test_a_notebook_renders_to_html_with_its_figures(tmp_path):
    """`scale-lab notebooks --html DIR`: executed pages with figures, for readers without Python
    and without a network: MathJax beside the pages, solutions in place of the stubs, no
    boilerplate or checks, an index linking every notebook."""
    pytest.importorskip("nbconvert")
    import re

    from analysis.notebooks import main

    assert main(["--html", str(tmp_path), "--smoke", "--only", "01"]) == 0
    page = (tmp_path / "01_momentum_quadratic.html").read_text()
    assert "Momentum" in page and page.count("data:image/png;base64") >= 1
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    assert scripts and all(not s.startswith(("http", "//")) for s in scripts), scripts  # offline
    assert any(s.startswith("mathjax/MathJax.js") for s in scripts)
    assert (tmp_path / "mathjax" / "MathJax.js").exists()
    assert "NotImplementedError" not in page and "a solution (analysis.teaching.solutions.sgd_floor)" in page
    assert "SMOKE = os.environ" not in page and "What this notebook shows" not in page
    assert 'href="index.html"' in page and 'href="02_normalization_geometry.html"' in page
    index = (tmp_path / "index.html").read_text()
    assert index.count("<li>") == 8 and 'href="08_design_your_own.html"' in index
    assert main(["--html", str(tmp_path), "--only", "99"]) == 2


def test_the_site_index_gives_each_notebook_a_whole_sentence_as_text():
    import jupytext

    from analysis.notebooks import notebook_paths, subtitle

    for path in notebook_paths():
        intro = next(c for c in jupytext.read(path).cells if c.cell_type == "markdown").source
        line = subtitle(intro)
        assert line and line[-1] in ".!?" and not set(line) & set("$`*\\"), (path.name, line)
