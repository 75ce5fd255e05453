"""glibc malloc settings for CPU inference, applied once per process by the CPU-heavy entry points
(``score_image``, ``score_images`` and the feature cache) and logged once at DEBUG (``midlevel-fast -v`` shows it).

The switch: the environment variable ``MIDLEVEL_FAST_MALLOC`` (``1``, the default: tune; ``0``: leave the host
process's allocator as it is, e.g. in a server that tunes its own). The settings change the whole process, not
only this library, which is why they are logged and why the switch exists; the default is on because of the
measurements below. A program may also call :func:`tune_malloc` itself, before anything else allocates.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start, raised by itself up to 32 MiB) with
fresh ``mmap`` pages, which fault in on first touch and go back to the kernel on ``free``; and it returns the
top of the heap to the kernel whenever 128 KiB of it is free. A network's activations are allocated and freed
for every layer, so each paid its page faults again: ``score_image(mode="batched")`` on Lite0 took 4.8 s in a
fresh process and 2.7 s with the threshold pinned at 32 MiB (500x375 VOC image, 2 cores). The dense mode's
largest activations are bigger than any threshold glibc accepts (a 96-channel map of the largest plane is 52 MB
in bfloat16, 103 MB in float32): allocating and touching one took 18 ms against 2 ms from the heap, and its
1x1 convolution 22 ms against 3.6 ms. So the settings turn ``mmap`` off (``M_MMAP_MAX = 0``: every block comes
from the heap and is reused after ``free``) and keep up to 256 MiB of freed memory at the top of the heap.
The cost: memory freed below the top of the heap stays with the process until it is reused.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

MMAP_MAX = 0
TRIM_THRESHOLD = 256 << 20
# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def tune_malloc() -> bool:
    """Applies the settings once per process; ``True`` when they were applied (Linux with glibc, not opted out)."""
    if os.environ.get("MIDLEVEL_FAST_MALLOC", "1") == "0":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(_M_MMAP_MAX, MMAP_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if applied:
        log.debug("glibc malloc tuned for this process (M_MMAP_MAX=%d, M_TRIM_THRESHOLD=%d MiB); "
                 "MIDLEVEL_FAST_MALLOC=0 leaves the allocator alone", MMAP_MAX, TRIM_THRESHOLD >> 20)
    return applied
