"""Where the toolkit's files live, in a clone and after ``pip install``.

- **Shipped** files (tokenizers, the corpus manifest, the reference recordings, the notebooks)
  are the repository's ``data/`` and ``notebooks/``. A wheel carries them as the packages
  ``scale_lab_data`` and ``scale_lab_notebooks`` (``pyproject.toml`` maps the two directories);
  a clone reads the directories themselves.
- **Built** files (the corpus, token caches, downloads) go to ``$SCALE_LAB_HOME`` when it is
  set; else to ``data/`` in a clone (a checkout with ``.git``), as before; else to the user cache
  directory ``platformdirs.user_cache_dir("scale-lab")`` (``~/.cache/scale-lab`` on Linux), as
  the Hugging Face libraries keep theirs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HOME_VARIABLE = "SCALE_LAB_HOME"


def _package_dir(package: str, clone_dir: Path, marker: str) -> Path:
    """A shipped directory: ``clone_dir`` when it holds ``marker``, else the installed package."""
    if (clone_dir / marker).exists():
        return clone_dir
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return clone_dir  # neither: the error of whoever reads it names the missing file
    return Path(next(iter(spec.submodule_search_locations)))


def shipped_data() -> Path:
    """The shipped ``data/`` directory (tokenizers, corpus manifest, recordings)."""
    return _package_dir("scale_lab_data", REPO_ROOT / "data", "corpus_manifest.json")


def shipped_notebooks() -> Path:
    """The shipped teaching notebooks' directory."""
    return _package_dir("scale_lab_notebooks", REPO_ROOT / "notebooks", "jupytext.toml")


def is_clone() -> bool:
    """Is this code running from a git checkout of the repository?"""
    return (REPO_ROOT / ".git").exists() and (REPO_ROOT / "data").is_dir()


def built_data() -> Path:
    """Where built files go (module docstring): ``$SCALE_LAB_HOME``, a clone's ``data/``, or
    the user cache directory."""
    if os.environ.get(HOME_VARIABLE):
        return Path(os.environ[HOME_VARIABLE]).expanduser()
    if is_clone():
        return REPO_ROOT / "data"
    import platformdirs

    return Path(platformdirs.user_cache_dir("scale-lab"))
