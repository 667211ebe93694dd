"""Cache files written safely under concurrency: a unique temporary name beside the target,
then an atomic rename (``os.replace``), so two processes that build the same cache at once
both succeed and a reader never sees a half-written file. The last rename wins; both wrote the
same bytes."""

from __future__ import annotations

import os
import secrets
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


def _fresh_file(directory: Path, prefix: str) -> Path:
    """Create a new empty file with a unique name in ``directory``. Opened with mode 0666 and
    ``O_EXCL`` (as ``tempfile.mkstemp``, which fixes 0600), so the kernel applies the umask as
    for a plain ``open``: the file keeps the permissions its reader expects after the rename."""
    while True:
        name = directory / f"{prefix}{secrets.token_hex(8)}.tmp"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue


def replace_atomically(path: Path, write: Callable[[Path], None], fix: str = HOME_FIX) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file in ``path``'s directory, then rename it to
    ``path``, with the permissions a plain ``open`` would give it (0666 less the umask); the
    temporary file is removed if anything fails. Returns ``path``. A directory
    that cannot be made or written raises ``NotWritable`` (naming it and ``fix``)."""
    path = Path(path)
    make_dir(path.parent, fix)
    try:
        tmp = _fresh_file(path.parent, f".{path.name}.")
    except OSError as err:
        raise NotWritable(path.parent, err, fix) from None
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
