"""Docs in the repository: every public module, class and function of ``analysis`` and
``toy_models`` has a docstring; the transforms' examples run (doctest); nothing cites a file
outside the repository."""

import ast
import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("analysis", "toy_models") for p in (ROOT / package).rglob("*.py"))
DOCTESTED = (
    "analysis.optim.transforms",
    "analysis.optim.baselines",
    "analysis.optim.state",
    "analysis.optim.sharding",
    "analysis.training.lr_schedule",
)


def _undocumented(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    missing = [] if ast.get_docstring(tree) or path.name == "__main__.py" else ["<module>"]
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            if not ast.get_docstring(node):
                missing.append(node.name)
    return missing


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_public_names_have_docstrings(path):
    assert not _undocumented(path), f"{path.relative_to(ROOT)}: no docstring for {_undocumented(path)}"


@pytest.mark.parametrize("module", DOCTESTED)
def test_examples_in_docstrings_run(module):
    result = doctest.testmod(
        importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0 and result.failed == 0


def test_every_transform_has_an_example():
    from analysis.optim import baselines, transforms

    for module in (transforms, baselines):
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, transforms.Transform)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                assert ">>>" in (obj.__doc__ or ""), f"{name} has no runnable example"


def test_nothing_cites_a_file_outside_the_repository():
    pattern = re.compile(r"\.\./shared|DESIGN(\.md| §| section)|(?<!recordings/)reference/\w+\.md")
    texts = SOURCES + sorted((ROOT / "notebooks").glob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    texts += [ROOT / "README.md", ROOT / "data" / "README.md"]
    cited = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in texts
        if p != Path(__file__)
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not cited, cited


def test_no_issue_numbers_in_code_tests_or_docs():
    """An issue number says nothing to a reader of the code; the rule and its source do."""
    pattern = re.compile(r"\b[Ii]ssues? \d+\b|\(issue\s*$")
    texts = SOURCES + sorted((ROOT / "notebooks").glob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    texts += [ROOT / "README.md"]
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in texts
        if p != Path(__file__)
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


def test_no_text_about_how_the_project_was_made():
    """Code, tests and docs describe the project: no work sessions, stops, design notes or
    what was lent to whom (the design's rules live in docstrings, with their sources)."""
    pattern = re.compile(
        r"\b[Ss]tops? \d+\b|\bDESIGN\b|\b(this|earlier|previous|next|a|the) sessions?\b"
        r"|\blent to\b|\bsessions'"
    )
    texts = SOURCES + sorted((ROOT / "notebooks").glob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    texts += [ROOT / "README.md", ROOT / "data" / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in texts
        if p != Path(__file__)
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


def test_the_readme_layout_names_every_module_and_no_other():
    """The README's Layout block against the tree: each sub-package's line, the top-level
    modules and toy_models list exactly the modules there are."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout\n", 1)[1].split("\nDependencies point one way", 1)[0]
    named = set(re.findall(r"\b([a-z_0-9]+)(?:\.py)?\b", re.sub(r"\([^)]*\)|`[^`]*`", "", block)))
    modules = {p.stem for p in (ROOT / "analysis").rglob("*.py")} | {
        p.stem for p in (ROOT / "toy_models").glob("*.py")
    }
    modules -= {"__init__", "__main__"}
    assert not modules - named, f"modules the README's Layout omits: {sorted(modules - named)}"
    words = {
        "analysis",
        "toy_models",
        "notebooks",
        "data",
        "the",
        "eight",
        "teaching",
        "corpus",
        "manifest",
        "tokenizers",
        "reference",
        "recordings",
        "run",
        "directory",
        "schema",
        "what",
        "a",
        "ran",
        "on",
        "readme",
        "md",
        "scale",
        "lab",
        "optim",
        "instrument",
        "train",
        "results",
        "protocol",
        "in",
        "one",
        "file",
        "sharding",
    }
    stale = {n for n in named - modules - words if not (ROOT / "analysis" / n).is_dir()}
    assert not stale, f"names in the README's Layout with no module: {sorted(stale)}"


def test_the_readme_quotes_the_shipped_report():
    from analysis.results.report import README_END, README_START, readme_excerpt
    from analysis.results.run_set import REFERENCE

    readme = (ROOT / "README.md").read_text()
    quoted = readme.split(README_START)[1].split(README_END)[0]
    assert quoted.strip() == readme_excerpt((REFERENCE / "report.md").read_text()).strip(), (
        "the README's results are stale: python -m analysis.results.report --sync-readme"
    )


def test_the_readme_quotes_the_shipped_advice_and_its_verdicts():
    """The advisor's numbers in the README are the shipped ``data/recordings/advice`` files'
    (``scale-lab advise ... --track-record --verify 570 --out data/recordings/advice``)."""
    import pandas as pd

    from analysis.results.stats import fmt

    advice = ROOT / "data" / "recordings" / "advice"
    section = (ROOT / "README.md").read_text().split("### Where does your model need momentum?")[1]
    section = " ".join(section.split("\n### ", 1)[0].split())  # a phrase may wrap across lines
    for row in pd.read_csv(advice / "verdicts.csv").itertuples():
        said = f"vs {row.against} {fmt(row.measured, row.half)} nats ({row.verdict})"
        assert said in section, f"the README's verification is stale: it should say {said!r}"
    for row in pd.read_csv(advice / "track_record.csv").drop_duplicates("placement").itertuples():
        said = f"{row.placement} {row.predicted:.3f} predicted, {fmt(row.measured, row.measured_ci)} measured"
        assert said in section, f"the README's track record is stale: it should say {said!r}"
