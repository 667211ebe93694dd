"""Cache files written safely under concurrency: a unique temporary name beside the target,
then an atomic rename (``os.replace``), so two processes that build the same cache at once
both succeed and a reader never sees a half-written file. The last rename wins; both wrote the
same bytes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file in ``path``'s directory, then rename it to
    ``path``; the temporary file is removed if anything fails. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
