"""Atomic replacement: whole or nothing, and the permissions a plain write would give."""

import os
import stat

import pytest

from toy_models.files import replace_atomically


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_replaced_file_has_the_permissions_a_plain_write_would_give(tmp_path, mask):
    old = os.umask(mask)
    try:
        replace_atomically(tmp_path / "made.json", lambda tmp: tmp.write_text("{}"))
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "made.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "kept.json"
    target.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_atomically(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.json"]
