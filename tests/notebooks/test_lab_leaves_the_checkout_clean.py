"""Opening and saving a notebook in JupyterLab leaves the checkout as it was: the server's
Jupytext contents manager (what JupyterLab saves through) reads each ``.py`` as a notebook
and writes it back after the kernel put its own metadata in (kernelspec, language_info); git
sees no change and no new file. The browser test does the same through a real JupyterLab."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _git(cwd, *args):
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_saving_every_notebook_through_jupytext_changes_no_file(tmp_path):
    pytest.importorskip("jupytext")
    from jupyter_server.services.contents.largefilemanager import LargeFileManager
    from jupytext.sync_contentsmanager import build_sync_jupytext_contents_manager_class

    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "notebooks", checkout / "notebooks")
    shutil.copy(ROOT / ".gitignore", checkout / ".gitignore")
    _git(checkout, "init", "-q")
    _git(checkout, "add", "-A")
    _git(checkout, "commit", "-q", "-m", "notebooks")
    manager = build_sync_jupytext_contents_manager_class(LargeFileManager)(root_dir=str(checkout))
    names = sorted(p.name for p in (checkout / "notebooks").glob("[0-9]*.py"))
    assert len(names) == 8
    for name in names:
        model = manager.get(f"notebooks/{name}", content=True, type="notebook")
        metadata = model["content"]["metadata"]
        # what JupyterLab's running kernel writes into the notebook before it saves
        metadata["kernelspec"] = {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        }
        metadata["language_info"] = {
            "name": "python",
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "version": "3.11",
        }
        manager.save(model, f"notebooks/{name}")
    assert _git(checkout, "status", "--porcelain") == ""
