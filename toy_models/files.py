"""Cache files written safely under concurrency: a unique temporary name beside the target,
then an atomic rename (``os.replace``), so two processes that build the same cache at once
both succeed and a reader never sees a half-written file. The last rename wins; both wrote the
same bytes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

HOME_FIX = (
    "set SCALE_LAB_HOME to a writable directory (or run `scale-lab setup --home DIR` and export what it says)"
)


class NotWritable(PermissionError):
    """A directory the toolkit must write into (a cache, a download, a build) cannot be
    written; ``str()`` is the one line that names it, the cause and the fix."""

    def __init__(self, directory: Path, cause: OSError, fix: str = HOME_FIX):
        self.directory = Path(directory)
        super().__init__(cause.errno, f"cannot write in {directory} ({cause.strerror or cause}); {fix}")

    def __str__(self) -> str:
        return self.strerror


def make_dir(directory: Path, fix: str = HOME_FIX) -> Path:
    """``directory`` (and its parents) created if missing; ``NotWritable`` when it cannot be."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NotWritable(directory, err, fix) from None
    return Path(directory)


def _umask() -> int:
    """The process's umask (read by setting it and setting it back: Python has no getter)."""
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def replace_atomically(path: Path, write: Callable[[Path], None], fix: str = HOME_FIX) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file in ``path``'s directory, then rename it to
    ``path``, with the permissions a plain ``open`` would give it (0666 less the umask); the
    temporary file is removed if anything fails. Returns ``path``. A directory
    that cannot be made or written raises ``NotWritable`` (naming it and ``fix``)."""
    path = Path(path)
    make_dir(path.parent, fix)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise NotWritable(path.parent, err, fix) from None
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from the group
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
