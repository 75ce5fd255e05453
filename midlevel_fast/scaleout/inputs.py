"""The inputs of a collection: the images to score (:func:`list_images`) and the loader that decodes them ahead of
the model (:func:`decode_loader`), whose worker processes die with the process that started them
(:func:`_die_with_parent`), so that a killed run leaves none behind."""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from midlevel_fast.io.image_io import load_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def list_images(inputs: str | os.PathLike | Sequence[str | os.PathLike],
                exclude: Sequence[Path] = ()) -> list[tuple[str, Path]]:
    """``(key, path)`` of the images to score, sorted by key.

    A directory is searched recursively for files with an image suffix (hidden files and folders and anything
    under ``exclude`` are left out); keys are paths relative to it. A sequence of paths is taken as given
    (duplicates removed), keys are the paths as strings.
    """
    if isinstance(inputs, (str, os.PathLike)):
        root = Path(inputs)
        if not root.is_dir():
            raise NotADirectoryError(f"{str(root)!r} is not a directory; pass a directory or a list of image paths")
        base = root.resolve()
        skip = [s.resolve().relative_to(base).parts for s in exclude if s.resolve().is_relative_to(base)]
        found = []
        for path in root.rglob("*"):
            rel = path.relative_to(root).parts
            if (path.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in rel)
                    and not any(rel[: len(s)] == s for s in skip) and path.is_file()):
                found.append(("/".join(rel), path))
        return sorted(found)
    return sorted({os.fspath(p): Path(p) for p in inputs}.items())


class _Decode(torch.utils.data.Dataset):
    """Decodes in DataLoader workers: ``(key, rgb uint8 HWC or None, error or None)``."""

    def __init__(self, items: Sequence[tuple[str, Path]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray | None, str | None]:
        key, path = self.items[i]
        try:
            return key, load_image(path), None
        except Exception as e:  # one bad file must never stop the run
            return key, None, str(e) or type(e).__name__


def _as_is(sample: Any) -> Any:
    return sample


# Linux prctl option: the signal this process gets when the thread that created it exits.
_PR_SET_PDEATHSIG = 1
# Seconds between the fallback's checks that the parent is alive.
_PARENT_POLL = 0.5


def _parent_death_signal() -> bool:
    """Asks the kernel to SIGKILL this process when its parent dies (Linux); ``False`` where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent(parent: int, worker_id: int = 0) -> None:
    """``worker_init_fn`` of the decoding workers: they exit when ``parent`` (the scoring process) dies.

    After a ``kill -9`` of the scoring process, a worker whose queue holds a decoded image otherwise never exits:
    it leaves the DataLoader's loop (torch's watchdog sees the new parent) but then waits forever for its queue's
    feeder thread, blocked writing to a pipe that nobody reads but whose read end the workers (forked with it)
    still hold. So: a parent-death SIGKILL (Linux ``prctl(PR_SET_PDEATHSIG)``; the kernel sends it when the thread
    that forked the worker exits, here the thread iterating the loader, i.e. the scoring loop) when the worker was
    forked by ``parent`` itself, and else (no prctl, or a ``forkserver``/``spawn`` start method, where the kernel
    would watch the wrong parent) a daemon thread polling the parent's liveness every :data:`_PARENT_POLL` s
    (``os.getppid()`` changed, or ``parent`` gone). Both end the worker at once (SIGKILL, ``os._exit``): it holds
    nothing worth flushing."""
    ppid = os.getppid()
    if ppid == parent and _parent_death_signal():
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == ppid and _alive(parent):
            time.sleep(_PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def decode_loader(items: Sequence[tuple[str, Path]], num_workers: int) -> torch.utils.data.DataLoader:
    """``(key, rgb uint8 HWC or None, error or None)`` for each ``(key, path)`` of ``items``, in order: the image,
    or why it could not be decoded (the message of the error). ``num_workers`` processes decode ahead (0, or no
    items: this process), each dying with this one (:func:`_die_with_parent`)."""
    return torch.utils.data.DataLoader(_Decode(items), batch_size=None, num_workers=num_workers if items else 0,
                                       collate_fn=_as_is,
                                       worker_init_fn=functools.partial(_die_with_parent, os.getpid()))
