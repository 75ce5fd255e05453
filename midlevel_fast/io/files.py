"""The one atomic write: every file the package produces (heads, caches, results, maps) goes through it, so a
reader, or a job resumed after a kill, never sees a half-written file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Calls ``write(temporary_path)`` for a temporary file beside ``path``, fsyncs it and renames it to ``path``
    (creating the parent directory). On any error the temporary file is removed and ``path`` is left as it was.
    The result gets the permissions any new file gets (``mkstemp`` would leave 0600)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
