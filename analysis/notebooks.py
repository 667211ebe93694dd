"""``scale-lab notebooks --html DIR``: every teaching notebook, executed, as static HTML with
its figures, for readers without Python; ``--copy DIR``: the notebooks themselves (with their
jupytext and JupyterLab settings) where a user can open them, from a clone or an install.

Each ``notebooks/NN_*.py`` (jupytext percent format) is read with ``jupytext``, executed
top to bottom in the repository by ``nbclient`` (``--smoke`` sets ``SCALE_LAB_SMOKE=1``:
the small, fast version CI runs), and written by ``nbconvert``'s ``HTMLExporter``, figures
embedded in the page. A page cannot move a slider or take an answer, so the explorers draw
their static figure (``SCALE_LAB_STATIC=1``) and each exercise shows its solution (from
``analysis.teaching.solutions``) in place of the stub. The site works offline: MathJax is
copied beside the pages from the ``jupyter-server-mathjax`` package (no CDN), the environment
cell, the solutions' import and the closing checks are left out, and ``index.html`` lists the
notebooks in order, each page linking to the index and the next. A notebook that fails is
reported with its error and the others still render; the exit code is 1 then.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from pathlib import Path

from analysis.arguments import Parser
from analysis.teaching import solutions
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


MATHJAX = "mathjax"  # the directory beside the pages
MATHJAX_FONTS = (
    '"HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", '
    'webFont: "STIX-Web", imageFont: null},'
)
MERMAID_LOADER = re.compile(
    r'<script type="module">\s*document\.addEventListener\("DOMContentLoaded", '
    r'async \(\) => \{\s*const diagrams = document\.querySelectorAll\("\.jp-Mermaid'
    r".*?</script>",
    re.S,
)
NO_REQUIRE = "scale-lab-no-require.js"  # require.js only serves live widgets: its tag is dropped
CHECKS = "## What this notebook shows (checked)"


def title(path: Path) -> str:
    """A notebook's title: its first markdown heading (``03 · Which layer is noisiest?``)."""
    import jupytext

    first = next(c for c in jupytext.read(path).cells if c.cell_type == "markdown")
    return first.source.splitlines()[0].lstrip("# ").strip()


SMOKE_BANNER = (
    "**Built in SMOKE mode**: every computation on this page is the small, fast version "
    "the tests run (`SMOKE = True` below), so its numbers and figures are previews, not "
    "results; build the site without `--smoke` for the full ones."
)


def for_reading(notebook, following: Path | None, smoke: bool = False):
    """The executed ``notebook`` as a page shows it: stubs replaced by their solutions, the
    solutions' import and the checks left out (the environment cell stays: later cells read
    ``SMOKE``), links added, and a banner on a page built in SMOKE mode."""
    import inspect

    import nbformat

    cells, dropping = [], False
    for cell in notebook.cells:
        source = cell.source
        if cell.cell_type == "markdown" and source.startswith(CHECKS):
            dropping = True
        if dropping or (
            cell.cell_type == "code"
            and "from analysis.teaching.solutions" in source
            and "grade(" not in source
            and "SMOKE = os.environ" not in source
        ):
            continue
        if cell.cell_type == "code" and 'raise NotImplementedError("your code' in source:
            name = source.split("def ", 1)[1].split("(", 1)[0]
            cell.source = (
                f"# a solution (analysis.teaching.solutions.{name})\n"
                + inspect.getsource(getattr(solutions, name)).rstrip()
            )
        if cell.cell_type == "code" and "from analysis.teaching.solutions" in source:
            cell.source = "\n".join(
                line for line in source.splitlines() if "solutions" not in line and "SOLUTIONS" not in line
            )
        cells.append(cell)
    links = "[all notebooks](index.html)" + (
        f" · next: [{title(following)}]({following.stem}.html)" if following is not None else ""
    )
    banner = [nbformat.v4.new_markdown_cell(SMOKE_BANNER)] if smoke else []
    notebook.cells = [
        nbformat.v4.new_markdown_cell(links),
        *banner,
        *cells,
        nbformat.v4.new_markdown_cell(links),
    ]
    return notebook


POLL_SLICE_S = 1.0


def executor(notebook, timeout_s: int, path: Path):
    """An ``nbclient.NotebookClient`` for ``notebook`` (cells run in ``path``) whose waits for
    the kernel's messages poll in slices of ``POLL_SLICE_S`` seconds up to each wait's timeout.

    Why: one wait for the whole cell timeout can miss a reply that has arrived (the client also
    sends on the shell socket while it waits, the widgets' comm traffic; jupyter/nbclient#312):
    a notebook then sat idle for the full 10-minute timeout beside an idle kernel. A fresh poll
    each second sees the reply within a second."""
    import time
    from queue import Empty

    from nbclient import NotebookClient

    def sliced(get_msg):
        async def get(timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = POLL_SLICE_S if deadline is None else deadline - time.monotonic()
                try:
                    return await get_msg(timeout=max(0.0, min(POLL_SLICE_S, left)))
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

        return get

    class SlicedPolls(NotebookClient):
        async def async_start_new_kernel_client(self):
            client = await super().async_start_new_kernel_client()
            for channel in (client.shell_channel, client.iopub_channel):
                channel.get_msg = sliced(channel.get_msg)
            return client

    return SlicedPolls(
        notebook, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(path)}}
    )


def render_html(
    path: Path, out_dir: Path, smoke: bool = False, timeout_s: int = 1800, following: Path | None = None
) -> Path:
    """Execute notebook ``path`` and write it as ``out_dir/<stem>.html`` for reading offline
    (``for_reading``; MathJax from ``out_dir/mathjax``); the page's path."""
    import jupytext
    from nbconvert import HTMLExporter

    notebook = jupytext.read(path)
    with _environment(SCALE_LAB_SMOKE="1" if smoke else "0", SCALE_LAB_STATIC="1", SCALE_LAB_SOLUTIONS="1"):
        executor(notebook, timeout_s, Path.cwd()).execute()
    exporter = HTMLExporter(
        mathjax_url=f"{MATHJAX}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe", require_js_url=NO_REQUIRE
    )
    body, _ = exporter.from_notebook_node(for_reading(notebook, following, smoke))
    body = body.replace(f'<script src="{NO_REQUIRE}"></script>', "")
    # nbconvert's Mermaid loader imports from a CDN; these pages draw no diagram
    body = MERMAID_LOADER.sub("", body)
    # the fonts MathJax ships in jupyter-server-mathjax are STIX-Web: ask for them, not for TeX's
    body = body.replace("messageStyle: 'none',", "messageStyle: 'none', " + MATHJAX_FONTS, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"{path.stem}.html"
    page.write_text(body, encoding="utf-8")
    return page


def copy_mathjax(out_dir: Path) -> Path:
    """MathJax 2 from the ``jupyter-server-mathjax`` package into ``out_dir/mathjax`` (once;
    its translations and its accessibility extension, which fetches speech rules from a CDN,
    left out)."""
    import jupyter_server_mathjax

    target = out_dir / MATHJAX
    if not (target / "MathJax.js").exists():
        shutil.copytree(
            Path(jupyter_server_mathjax.__file__).parent / "static",
            target,
            ignore=shutil.ignore_patterns("localization", "a11y"),
            dirs_exist_ok=True,
        )
    return target


def subtitle(intro: str) -> str:
    """An intro's first whole sentence as plain text: its first paragraph after the heading,
    markdown marks and links as their text, the first sentence without a formula (the index
    is not typeset), else the first with its formulas left out."""
    lines = [line for line in intro.splitlines() if not line.startswith("#")]
    paragraphs = [" ".join(p.split()) for p in "\n".join(lines).split("\n\n") if p.strip()]
    paragraph = paragraphs[0] if paragraphs else ""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", paragraph)  # [text](link) -> text
    text = re.sub(r"[*`]+", "", text).strip()
    sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", text) if x.strip()]
    plain = [x for x in sentences if "$" not in x]
    first = plain[0] if plain else re.sub(r"\s*\$[^$]*\$\s*", " ", sentences[0] if sentences else "")
    first = " ".join(first.split())
    return first[:-1] + "." if first.endswith(":") else first  # a sentence that opens a list


def write_index(out_dir: Path, paths: list[Path]) -> Path:
    """``index.html``: the course's arc, one linked line per notebook, its opening sentence."""
    import html

    import jupytext

    items = []
    for path in paths:
        intro = next(c for c in jupytext.read(path).cells if c.cell_type == "markdown").source
        first = subtitle(intro)
        items.append(
            f'<li><a href="{path.stem}.html">{html.escape(title(path))}</a>'
            f"<br><small>{html.escape(first)}</small></li>"
        )
    page = out_dir / "index.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>scale-lab notebooks"
        "</title></head><body style='font-family:sans-serif;max-width:46em;margin:2em auto'>"
        "<h1>scale-lab: SCALE from the ground up</h1><p>From momentum on a noisy "
        "quadratic to the paper's bottom-up argument on a LLaMA, then your own model "
        "and your own optimizer. Read in order; each page was executed when built."
        f"</p><ol>{''.join(items)}</ol></body></html>\n",
        encoding="utf-8",
    )
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
    print(
        f"copied {len(sources) - len(kept)} files to {out}"
        + (f" (kept your {', '.join(kept)})" if kept else "")
        + f"; open them with: jupyter lab {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Render the notebooks to HTML; 0 when all rendered, 1 when some failed, 2 on bad input."""
    parser = Parser(prog="scale-lab notebooks", description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--html", default=None, metavar="DIR", help="directory for the pages")
    parser.add_argument(
        "--copy", default=None, metavar="DIR", help="copy the notebooks into DIR (then: jupyter lab DIR)"
    )
    parser.add_argument("--smoke", action="store_true", help="the small, fast version (as CI)")
    parser.add_argument("--only", default=None, help="comma-separated prefixes, e.g. 01,07")
    args = parser.parse_args(argv)
    if (args.html is None) == (args.copy is None):
        print(
            "error: give one of --html DIR (render) or --copy DIR (the notebooks themselves)", file=sys.stderr
        )
        return 2
    if args.copy is not None:
        return copy_notebooks(Path(args.copy))
    out = Path(args.html)
    if out.exists() and not out.is_dir():
        print(f"error: --html {out} is a file, not a directory; choose another", file=sys.stderr)
        return 2
    paths = notebook_paths(args.only.split(",") if args.only else None)
    if not paths:
        every = notebook_paths()
        print(
            f"error: no notebook matches --only {args.only}; names start "
            f"{every[0].stem[:2]}..{every[-1].stem[:2]}",
            file=sys.stderr,
        )
        return 2
    failed = 0
    every = notebook_paths()
    copy_mathjax(out)
    write_index(out, every)
    for path in paths:
        following = every[every.index(path) + 1] if path != every[-1] else None
        try:
            page = render_html(path, out, smoke=args.smoke, following=following)
            print(f"wrote {page}")
        except Exception as err:  # a failing notebook is reported; the others still render
            failed += 1
            print(
                f"failed {path.name}: {type(err).__name__}: {str(err).strip().splitlines()[-1:]}",
                file=sys.stderr,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
