"""glibc malloc settings for CPU inference, applied once by the CPU-heavy entry points (``score_image`` and the
feature cache). Set ``MIDLEVEL_FAST_MALLOC=0`` to leave the allocator as it is.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start) with fresh ``mmap`` pages, which
fault in on first touch and go back to the kernel on ``free``. It raises that threshold by itself, up to 32 MiB,
but only after freeing such a block, and it returns the top of the heap to the kernel whenever 128 KiB of it is
free. A network's activations are allocated and freed for every batch, so the same forward pass paid those page
faults or not depending on what the process had done before: ``score_image(mode="batched")`` on Lite0 took 4.8 s
in a fresh process and 2.7 s with the settings below (500×375 VOC image, 2 cores). The settings pin the
threshold at glibc's own ceiling and keep up to 256 MiB of freed memory for reuse.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def tune_malloc() -> bool:
    """Applies the settings once per process; ``True`` when they were applied (Linux with glibc, not opted out)."""
    if os.environ.get("MIDLEVEL_FAST_MALLOC", "1") == "0":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
