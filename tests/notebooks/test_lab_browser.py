"""A notebook opened in JupyterLab shows cells, not its ``.py`` source (issue 14): a real
headless Chromium (the system's package; ``.ci/run`` installs it) against a JupyterLab server
started here, with the settings ``make setup`` installs into the venv. The page's DOM is read
after JupyterLab has rendered; a screenshot is kept next to it as the test's artifact."""

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


def test_a_notebook_opens_as_a_notebook_in_jupyterlab(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine: apt-get install -y chromium (.ci/run does)")
    pytest.importorskip("jupyterlab")
    overrides = Path(sys.prefix) / "share/jupyter/lab/settings/overrides.json"
    assert overrides.exists(), f"{overrides} is missing: make setup installs it"
    assert json.loads(overrides.read_text()) == json.loads(
        (ROOT / "notebooks/jupyterlab-overrides.json").read_text())
    port, token = _free_port(), "scale-lab-test"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--allow-root",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={ROOT}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],   # no remembered layout
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"))
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server)
        url = f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}"
        browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                   "--virtual-time-budget=30000", "--window-size=1400,1000"]
        dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True,
                             timeout=180).stdout
        subprocess.run([*browser, f"--screenshot={tmp_path / 'notebook.png'}", url],
                       capture_output=True, timeout=180)
    finally:
        server.terminate()
        server.wait(timeout=30)
    (tmp_path / "page.html").write_text(dom)
    assert 'class="lm-Widget jp-MainAreaWidget jp-NotebookPanel' in dom, "not opened as a notebook"
    assert 'class="lm-Widget jp-FileEditor' not in dom, "opened in the text editor"
    assert dom.count('class="lm-Widget jp-Cell ') >= 5
