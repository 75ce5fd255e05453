"""The one atomic write (:mod:`midlevel_fast.io.files`): all or nothing, no temporary left behind, ordinary
permissions."""
from __future__ import annotations

import os
import stat

import pytest

from midlevel_fast.io import files
from midlevel_fast.io.files import atomic_write, atomic_write_bytes


def test_writes_creating_the_parent_with_the_umask_permissions(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(path, b"payload")
    assert path.read_bytes() == b"payload" and os.listdir(path.parent) == ["out.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_failure_while_writing_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_bytes(path, b"old")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.txt"]


def test_failure_at_the_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    atomic_write_bytes(path, b"old")

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.txt"]
