"""The one atomic write (:mod:`midlevel_fast.io.files`): all or nothing, no temporary left behind, ordinary
permissions."""
from __future__ import annotations

import os
import stat

import pytest

from midlevel_fast import AdaptationHead, HeadInfo, save_head
from midlevel_fast.io import files
from midlevel_fast.io.files import atomic_write, atomic_write_bytes
from midlevel_fast.scaleout import results
from midlevel_fast.scaleout.results import write_rows


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


def _killed_mid_write(real_atomic_write):
    """``atomic_write`` whose callback is cut short as a kill would: the user's callback runs, the temporary file
    is cut to 5 bytes, and ``KeyboardInterrupt`` is raised inside the callback."""

    def atomic_write_killed(path, write):
        def partial(tmp: str) -> None:
            write(tmp)
            os.truncate(tmp, 5)
            raise KeyboardInterrupt("killed while writing")

        real_atomic_write(path, partial)

    return atomic_write_killed


def _save_a_head(path, outputs: int):
    info = HeadInfo(backbone="efficientnet_lite0", class_names=[f"c{i}" for i in range(outputs)], layers=1)
    save_head(path, AdaptationHead(8, info.num_outputs, layers=1), info)


def _write_a_report(path, rows: int):
    write_rows(path, [{"image": f"{i}.jpg", "score": 0.5} for i in range(rows)])


@pytest.mark.parametrize("writer", [_save_a_head, _write_a_report], ids=["save_head", "write_rows"])
def test_a_user_of_atomic_write_killed_mid_write_leaves_the_old_file(tmp_path, monkeypatch, writer):
    """The writers of heads and JSON reports, interrupted inside the write (after a few bytes reached the
    temporary file), leave the previous file byte for byte and no temporary behind."""
    path = tmp_path / ("out.safetensors" if writer is _save_a_head else "out.jsonl")
    writer(path, 2)
    before = path.read_bytes()
    killed = _killed_mid_write(files.atomic_write)
    # head.py reaches it through files.atomic_write_bytes, results.py imported the name.
    monkeypatch.setattr(files, "atomic_write", killed)
    monkeypatch.setattr(results, "atomic_write", killed)
    with pytest.raises(KeyboardInterrupt, match="killed while writing"):
        writer(path, 3)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]
