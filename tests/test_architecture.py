"""The layout's rules, read from the source (no import of the code under test):

- ``toy_models`` never imports ``analysis``; ``analysis.recording``, ``analysis.provenance`` and
  ``analysis.arguments`` import nothing of ours;
- between rooms, imports point down only: orchestration (reproduce, bench, cli) -> protocol ->
  train and results (siblings, neither imports the other) -> instrument -> optim -> recording;
- no import cycle between modules;
- our own modules are imported at module top (imports inside functions are for optional or
  heavy third-party packages only);
- no module is over 400 lines;
- no circle through a package's face: inside a package whose ``__init__`` re-exports from its
  modules, a module imports a sibling as ``analysis.pkg.mod``, never ``from analysis.pkg import``
  (which runs the half-initialized ``__init__`` and works only by the accident of import order).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "toy_models")
FLOORS = {
    "analysis.recording": 0,
    "analysis.arguments": 0,
    "analysis.provenance": 0,
    "analysis.optim": 1,
    "analysis.instrument": 2,
    "analysis.training": 3,
    "analysis.train": 4,  # the old name of analysis.training (one release): it imports that
    "analysis.results": 3,
    "analysis.protocol": 4,
    "analysis.gpu_check": 4,
    "analysis.reproduce": 5,
    "analysis.bench": 5,
    "analysis.cli": 5,
    "analysis.teaching": 5,
    "analysis.notebooks": 6,
    "analysis.advice": 5,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module or ``module.attribute``) refers to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(target module, line, inside a function)`` for each import of ours in ``path``."""
    tree = ast.parse(path.read_text())
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested |= {id(n) for n in ast.walk(node) if n is not node}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                target = _resolve(name)
                if target:
                    found.append((target, node.lineno, id(node) in nested))
    return found


GRAPH = {module: _imports(path) for module, path in MODULES.items()}


def _room(module: str) -> str | None:
    return next((room for room in FLOORS if module == room or module.startswith(room + ".")), None)


def test_the_layout_has_the_four_rooms():
    for room in ("analysis.optim", "analysis.instrument", "analysis.training", "analysis.results"):
        assert room in MODULES, f"missing sub-package {room}"


def test_toy_models_never_imports_analysis():
    bad = [
        (m, t, line)
        for m, edges in GRAPH.items()
        if m.startswith("toy_models")
        for t, line, _ in edges
        if t.startswith("analysis")
    ]
    assert not bad, f"toy_models imports analysis: {bad}"


def test_recording_and_arguments_import_nothing_of_ours():
    # but the one atomic-write helper, a leaf that imports nothing of ours either
    assert {t for t, _, _ in GRAPH["analysis.recording"]} <= {"toy_models.files"}
    assert not GRAPH["toy_models.files"]
    assert not GRAPH["analysis.arguments"] and not GRAPH["analysis.provenance"]


def test_dependencies_point_down_between_rooms():
    bad = []
    for module, edges in GRAPH.items():
        source = _room(module)
        if source is None:
            continue
        for target, line, _ in edges:
            room = _room(target)
            if room is None or room == source:
                continue
            if not FLOORS[room] < FLOORS[source]:
                bad.append(f"{module}:{line} imports {target} ({source} -> {room})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module):
        state[module], _ = 1, path.append(module)
        for target, _, _ in GRAPH.get(module, []):
            if target == module:
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        state[module] = 2
        path.pop()

    for module in GRAPH:
        if module not in state:
            visit(module)


def test_our_modules_are_imported_at_module_top():
    bad = [
        f"{m}:{line} imports {t} inside a function"
        for m, edges in GRAPH.items()
        for t, line, inside in edges
        if inside
    ]
    assert not bad, "\n".join(bad)


def test_no_module_is_over_400_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def _reexporting_packages() -> set[str]:
    """Packages whose ``__init__`` imports from their own modules."""
    found = set()
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            tree = ast.parse(path.read_text())
            if any(
                isinstance(n, ast.ImportFrom) and (n.module or "").startswith(name + ".") for n in tree.body
            ):
                found.add(name)
    return found


def test_no_module_imports_its_own_package_face():
    packages = _reexporting_packages()
    assert {"analysis.optim", "analysis.training", "analysis.instrument"} <= packages
    bad = []
    for name, path in MODULES.items():
        package = name.rsplit(".", 1)[0]
        if path.name == "__init__.py" or package not in packages:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == package:
                bad.append(f"{name}: from {package} import ...")
    assert not bad, bad
