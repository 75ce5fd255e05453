"""The glibc malloc settings: applied once per process on Linux/glibc, and left alone when the user opts out.

Each case runs in a fresh interpreter, since the settings are per process and the rest of the suite applies them.
The effect is read from glibc itself: ``mallinfo2().hblks`` counts the blocks served by ``mmap``. With the top
of the heap trimmed first, a 24 MiB block is mmapped under glibc's own dynamic threshold (raised only to the
largest block freed so far, 16 MiB here); tuned, no block is mmapped, not even one of 128 MiB (above any
threshold glibc accepts).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from midlevel_fast.runtime.malloc import MMAP_MAX

LIBC, LIBC_VERSION = platform.libc_ver()
# mallinfo2 (size_t fields) appeared in glibc 2.33.
HAS_MALLINFO2 = sys.platform.startswith("linux") and LIBC == "glibc" and (
    tuple(int(p) for p in LIBC_VERSION.split(".")[:2]) >= (2, 33))
pytestmark = pytest.mark.skipif(not HAS_MALLINFO2, reason="reads the allocator's state with glibc >= 2.33 mallinfo2")

PROBE = """
import ctypes, json
from midlevel_fast.runtime.malloc import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]

def mmapped(mib):
    libc.malloc_trim(0)  # hands the free top of the heap back, so the block must come from a new mapping or brk
    before = libc.mallinfo2().hblks
    block = libc.malloc(mib << 20)
    served_by_mmap = libc.mallinfo2().hblks > before
    libc.free(block)
    return served_by_mmap

out = {"untuned_16": mmapped(16), "first": tune_malloc(), "after_first_24": mmapped(24)}
out["after_first_128"] = mmapped(128)
libc.mallopt(-4, 65536)  # the user's own M_MMAP_MAX, set after the first call: a second one must keep it
out["second"] = tune_malloc()
out["after_second_24"] = mmapped(24)
print(json.dumps(out))
"""


def probe(**env: str) -> dict[str, bool]:
    base = {k: v for k, v in os.environ.items() if k != "MIDLEVEL_FAST_MALLOC"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**base, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_applied_exactly_once():
    assert MMAP_MAX == 0
    got = probe()
    assert got["untuned_16"], f"the probe cannot see mmapped blocks: {got}"
    assert got["first"] is True and not got["after_first_24"] and not got["after_first_128"], (
        f"the first call did not turn mmap off: {got}")
    # The second call reports the settings as applied but does not apply them again: the user's M_MMAP_MAX stays.
    assert got["second"] is True and got["after_second_24"], f"the second call applied the settings again: {got}"


def test_opt_out_leaves_the_allocator_alone():
    got = probe(MIDLEVEL_FAST_MALLOC="0")
    assert got["untuned_16"] and got["after_first_128"]
    assert got["first"] is False and got["second"] is False
    assert got["after_first_24"], f"the allocator was tuned despite MIDLEVEL_FAST_MALLOC=0: {got}"
