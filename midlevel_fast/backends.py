"""Which compiled kernels this build has, and why the missing ones are missing."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import NamedTuple


class BackendStatus(NamedTuple):
    """``available`` says whether the backend can run here; ``detail`` says what it is or why it is missing."""

    available: bool
    detail: str


def _load_cpu() -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module("midlevel_fast._C"), "C++17/OpenMP extension midlevel_fast._C"
    except ImportError as e:
        return None, f"extension midlevel_fast._C failed to import ({e}); reinstall with `pip install -e .`"


cpu_ext, _cpu_detail = _load_cpu()


def _triton_status() -> BackendStatus:
    if importlib.util.find_spec("triton") is None:
        return BackendStatus(False, "triton is not installed (pip install 'midlevel_fast[triton]')")
    return BackendStatus(False, "triton is installed but this version ships no Triton kernels yet")


def backends() -> dict[str, BackendStatus]:
    """Status of each crop-resize backend: ``cpu``, ``cuda``, ``triton`` (the pure-torch ``reference`` always
    works and is not listed)."""
    return {
        "cpu": BackendStatus(cpu_ext is not None, _cpu_detail),
        "cuda": BackendStatus(False, "this version ships no CUDA kernels yet"),
        "triton": _triton_status(),
    }
