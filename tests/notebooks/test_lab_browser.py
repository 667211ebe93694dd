"""A notebook opened in JupyterLab shows cells, not its ``.py`` source, and runs there:
a real headless Chromium (the system's package; ``.ci/run`` installs it), driven by
Playwright, against a JupyterLab server started here with the settings ``make setup`` installs
into the venv. The test opens the notebook, runs every cell from JupyterLab's Run menu, waits
until each code cell has its execution count, and reads the page: cells, outputs, figures, the
graded exercise, no error; then moves a slider with the keyboard and waits for its figure to
redraw, and types a wrong answer to an exercise into a new cell, whose feedback must be at
most two lines. Saving it (Ctrl+S) must leave the checkout's git status empty. A screenshot is kept as the
test's artifact."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/01_momentum_quadratic.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, limit_s: float = 120.0) -> None:
    """Poll the server's status API until it answers (or the server dies, or the limit)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"jupyter lab did not answer {url} within {limit_s} s")


RUN_ALL_DONE = """() => {
    const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
        .map(e => e.textContent.trim());
    return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
}"""


def test_a_notebook_opens_as_a_notebook_and_runs_in_jupyterlab(tmp_path, monkeypatch):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine: apt-get install -y chromium (.ci/run does)")
    pytest.importorskip("jupyterlab")
    sync_api = pytest.importorskip("playwright.sync_api")
    overrides = Path(sys.prefix) / "share/jupyter/lab/settings/overrides.json"
    assert overrides.exists(), f"{overrides} is missing: make setup installs it"
    assert json.loads(overrides.read_text()) == json.loads(
        (ROOT / "notebooks/jupyterlab-overrides.json").read_text()
    )
    # the kernel inherits these: the small version, exercises with their solutions
    monkeypatch.setenv("SCALE_LAB_SMOKE", "1")
    monkeypatch.setenv("SCALE_LAB_SOLUTIONS", "1")
    # a copy of the checkout (a git repository): JupyterLab saves the notebook it ran, and git
    # must then see no change
    served = tmp_path / "served"
    (served / "notebooks").mkdir(parents=True)
    for name in (NOTEBOOK, "notebooks/jupytext.toml", ".gitignore"):
        shutil.copy(ROOT / name, served / name)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "checkout"]):
        subprocess.run(
            ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
            cwd=served,
            check=True,
            capture_output=True,
        )
    port, token = _free_port(), "scale-lab-test"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--allow-root",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={served}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        ],  # no remembered layout
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "lab.log", "w"),
    )
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server)
        with sync_api.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}")
            page.wait_for_function(
                "document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length >= 5", timeout=120_000
            )  # rendered, not only started
            opened_as = {
                "notebook": page.locator(".jp-NotebookPanel").count(),
                "text editor": page.locator(".jp-FileEditor").count(),
            }
            cells = page.locator(".jp-NotebookPanel .jp-Cell").count()  # code and markdown
            # Run All before the kernel is up is dropped: wait for the status bar's "Idle"
            page.wait_for_function(
                "document.querySelector('.jp-StatusBar-Widget') !== null && "
                "document.querySelector('.jp-StatusBar-Widget').innerText.includes('Idle')",
                timeout=120_000,
            )
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            try:
                page.wait_for_function(RUN_ALL_DONE, timeout=300_000)  # every code cell has run
            finally:
                page.screenshot(path=tmp_path / "notebook.png")  # the test's artifact, also on a timeout
            # saved as a student would: the checkout must not change (no twin, no new metadata)
            written = (served / NOTEBOOK).stat().st_mtime_ns
            page.locator(".jp-NotebookPanel .jp-Cell").first.click()
            page.keyboard.press("Escape")
            page.keyboard.press("Control+s")
            page.wait_for_function("!document.querySelector('.jp-mod-current.jp-mod-dirty')", timeout=60_000)
            saved = (served / NOTEBOOK).stat().st_mtime_ns != written
            status = subprocess.run(
                ["git", "status", "--porcelain"], cwd=served, capture_output=True, text=True, check=True
            ).stdout
            # the first explorer's slider: a key press moves it and the figure under it redraws
            explorer = page.locator(".jp-NotebookPanel .widget-interact").first
            explorer.scroll_into_view_if_needed()
            before = explorer.locator("img").first.get_attribute("src")
            handle = explorer.locator(".noUi-handle").first
            handle.focus()
            for _ in range(3):
                handle.press("ArrowRight")
            page.wait_for_function(
                "([before]) => { const img = document.querySelector('.jp-NotebookPanel .widget-interact img');"
                " return img !== null && img.getAttribute('src') !== before; }",
                arg=[before],
                timeout=60_000,
            )
            redrawn = explorer.locator("img").first.get_attribute("src") != before
            # a wrong answer, typed into a new cell as a student would: short feedback, no traceback
            cells_before = page.locator(".jp-NotebookPanel .jp-CodeCell").count()
            page.locator(".jp-NotebookPanel .jp-Cell .jp-InputPrompt").last.click()  # select, command mode
            page.keyboard.press("Escape")
            page.keyboard.press("b")  # a cell below
            page.wait_for_function(
                f"document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length > {cells_before}"
            )
            page.keyboard.press("Enter")
            page.keyboard.type('exercises.grade("sgd_floor", lambda lr, sigma: 0.0)')
            page.keyboard.press("Shift+Enter")
            new_cell = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(cells_before)
            try:
                new_cell.locator(".jp-OutputArea-output").first.wait_for(timeout=60_000)
            finally:
                page.screenshot(path=tmp_path / "wrong-answer.png")
            feedback = new_cell.locator(".jp-OutputArea-output").first.inner_text().strip()
            outputs = page.locator(".jp-NotebookPanel .jp-OutputArea-output")
            errors = page.locator(".jp-NotebookPanel [data-mime-type='application/vnd.jupyter.stderr']")
            text = " ".join(outputs.all_text_contents())
            images, n_outputs, n_errors = (
                page.locator(".jp-NotebookPanel .jp-OutputArea-output img").count(),
                outputs.count(),
                errors.all_text_contents(),
            )
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert opened_as == {"notebook": 1, "text editor": 0}, f"opened as {opened_as}"
    assert saved and status == "", f"saving changed the checkout: {status!r}"
    assert cells >= 5
    assert not [e for e in n_errors if "Error" in e], n_errors
    assert n_outputs >= 5 and images >= 2, (n_outputs, images)  # text and figures rendered
    assert "exercise 'sgd_floor': correct" in text
    assert redrawn, "moving a slider did not redraw its figure"
    assert feedback.startswith("exercise 'sgd_floor': not yet") and len(feedback.splitlines()) <= 2, feedback
    assert "Traceback" not in feedback


def test_the_static_site_typesets_its_formulas_offline(tmp_path):
    """`scale-lab notebooks --html`: a page opened from disk with the network off loads only
    local files and MathJax typesets its formulas (no raw TeX left in the text). A screenshot
    is kept as the test's artifact."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine: apt-get install -y chromium (.ci/run does)")
    pytest.importorskip("nbconvert")
    sync_api = pytest.importorskip("playwright.sync_api")
    from analysis.notebooks import main

    site = tmp_path / "site"
    assert main(["--html", str(site), "--smoke", "--only", "01"]) == 0
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(offline=True)
        page = context.new_page()
        fetched = []
        page.on("request", lambda request: fetched.append(request.url))
        page.goto((site / "01_momentum_quadratic.html").as_uri())
        try:  # MathJax 2 marks each typeset formula with a MathJax element
            page.wait_for_function(
                "document.querySelectorAll('span.MathJax, span.MathJax_CHTML').length > 5", timeout=120_000
            )
        finally:
            page.screenshot(path=tmp_path / "site.png", full_page=False)
        typeset = page.locator("span.MathJax, span.MathJax_CHTML").count()
        text = page.inner_text("body")
        browser.close()
    assert typeset > 5 and r"\tfrac12" not in text and r"\beta m" not in text
    assert text.count("Built in SMOKE mode") == 1  # said once, on top
    page_html = (site / "01_momentum_quadratic.html").read_text()
    shipped = [page_html, *(p.read_text(errors="replace") for p in (site / "mathjax").rglob("*.js"))]
    assert not [t for t in shipped if "cdnjs." in t or "cdn.jsdelivr" in t]  # no CDN, even unused
    remote = [u for u in fetched if not u.startswith(("file://", "about:blank"))]  # blank: no network
    assert fetched and not remote, remote
