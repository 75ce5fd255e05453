"""The glibc malloc settings: applied on Linux/glibc, and left alone when the user opts out."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from midlevel_fast.scoring.malloc import tune_malloc

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is a glibc interface")
def test_applied_once_on_glibc():
    assert tune_malloc() is True and tune_malloc() is True


def test_opt_out_leaves_the_allocator_alone():
    code = "from midlevel_fast.scoring.malloc import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"MIDLEVEL_FAST_MALLOC": "0", "PATH": ""})
    assert out.stdout.strip() == "False"
