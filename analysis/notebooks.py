"""``scale-lab notebooks --html DIR``: every teaching notebook, executed, as static HTML with
its figures, for readers without Python; ``--copy DIR``: the notebooks themselves (with their
jupytext and JupyterLab settings) where a user can open them, from a clone or an install.

Each ``notebooks/NN_*.py`` (jupytext percent format) is read with ``jupytext``, executed
top to bottom in the repository by ``nbclient`` (``--smoke`` sets ``SCALE_LAB_SMOKE=1``:
the small, fast version CI runs), and written by ``nbconvert``'s ``HTMLExporter``, figures
embedded in the page. A page cannot move a slider or take an answer, so the explorers draw
their static figure (``SCALE_LAB_STATIC=1``) and the exercises are shown solved
(``SCALE_LAB_SOLUTIONS=1``, the solutions of ``analysis.teaching.solutions``). A notebook that fails is reported with its error and the others still
render; the exit code is 1 then.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

from analysis.arguments import Parser
from toy_models.paths import shipped_notebooks

NOTEBOOKS = shipped_notebooks()


def notebook_paths(names=None) -> list[Path]:
    """The teaching notebooks (``NN_*.py``), or those whose stem starts with one of ``names``."""
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if names:
        paths = [p for p in paths if any(p.stem.startswith(n) for n in names)]
    return paths


@contextlib.contextmanager
def _environment(**values):
    """Set environment variables for the block (the kernel inherits them), then restore."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def render_html(path: Path, out_dir: Path, smoke: bool = False, timeout_s: int = 1800) -> Path:
    """Execute notebook ``path`` and write it as ``out_dir/<stem>.html``; the page's path."""
    import jupytext
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    notebook = jupytext.read(path)
    with _environment(SCALE_LAB_SMOKE="1" if smoke else "0", SCALE_LAB_STATIC="1", SCALE_LAB_SOLUTIONS="1"):
        NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                       resources={"metadata": {"path": str(Path.cwd())}}).execute()
    body, _ = HTMLExporter().from_notebook_node(notebook)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"{path.stem}.html"
    page.write_text(body, encoding="utf-8")
    return page


def copy_notebooks(out: Path) -> int:
    """Copy every notebook and its settings into ``out`` (an existing notebook is not
    overwritten); 0, or 2 with one line when ``out`` is a file."""
    if out.exists() and not out.is_dir():
        print(f"error: --copy {out} is a file, not a directory; choose another", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    sources = notebook_paths() + [NOTEBOOKS / n for n in ("jupytext.toml", "jupyterlab-overrides.json")]
    kept = [p.name for p in sources if (out / p.name).exists()]
    for path in sources:
        if path.name not in kept:
            shutil.copy2(path, out / path.name)
    print(f"copied {len(sources) - len(kept)} files to {out}"
          + (f" (kept your {', '.join(kept)})" if kept else "") + f"; open them with: jupyter lab {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Render the notebooks to HTML; 0 when all rendered, 1 when some failed, 2 on bad input."""
    parser = Parser(prog="scale-lab notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("--html", default=None, metavar="DIR", help="directory for the pages")
    parser.add_argument("--copy", default=None, metavar="DIR",
                        help="copy the notebooks into DIR (then: jupyter lab DIR)")
    parser.add_argument("--smoke", action="store_true", help="the small, fast version (as CI)")
    parser.add_argument("--only", default=None, help="comma-separated prefixes, e.g. 01,07")
    args = parser.parse_args(argv)
    if (args.html is None) == (args.copy is None):
        print("error: give one of --html DIR (render) or --copy DIR (the notebooks themselves)",
              file=sys.stderr)
        return 2
    if args.copy is not None:
        return copy_notebooks(Path(args.copy))
    out = Path(args.html)
    if out.exists() and not out.is_dir():
        print(f"error: --html {out} is a file, not a directory; choose another", file=sys.stderr)
        return 2
    paths = notebook_paths(args.only.split(",") if args.only else None)
    if not paths:
        print(f"error: no notebook matches --only {args.only}; names start 01..07", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        try:
            page = render_html(path, out, smoke=args.smoke)
            print(f"wrote {page}")
        except Exception as err:   # a failing notebook is reported; the others still render
            failed += 1
            print(f"failed {path.name}: {type(err).__name__}: {str(err).strip().splitlines()[-1:]}",
                  file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
