"""Which compiled kernels this build has, and why the missing ones are missing."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from functools import cache
from types import ModuleType
from typing import NamedTuple

import torch


class BackendStatus(NamedTuple):
    """``available`` says whether the backend can run here; ``detail`` says what it is or why it is missing."""

    available: bool
    detail: str


def _load_cpu() -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module("midlevel_fast._C"), "C++17/OpenMP extension midlevel_fast._C"
    except ImportError as e:
        return None, f"extension midlevel_fast._C failed to import ({e}); reinstall with `pip install -e .`"


def _load_cuda() -> tuple[ModuleType | None, str]:
    # Importing needs no GPU and no CUDA runtime: cudart is linked statically and finds the driver lazily.
    if importlib.util.find_spec("midlevel_fast._cuda") is None:
        return None, ("CUDA extension midlevel_fast._cuda is not built: nvcc was not found at install time, or "
                      "MIDLEVEL_FAST_CUDA=0 (reinstall with nvcc on PATH; MIDLEVEL_FAST_CUDA=1 makes it required)")
    try:
        return importlib.import_module("midlevel_fast._cuda"), "CUDA extension midlevel_fast._cuda"
    except ImportError as e:
        return None, f"CUDA extension midlevel_fast._cuda failed to import ({e})"


cpu_ext, _cpu_detail = _load_cpu()
cuda_ext, _cuda_detail = _load_cuda()


def triton_interpreted() -> bool:
    """Whether Triton kernels run under its CPU interpreter (``TRITON_INTERPRET=1``, read when the kernels are
    first imported): then they take CPU tensors, slowly, for tests."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@cache
def _cuda_status() -> BackendStatus:
    # Cached: the device count cannot change within a process, and probing initialises the CUDA driver.
    if cuda_ext is None:
        return BackendStatus(False, _cuda_detail)
    built = f"{_cuda_detail} (built for {cuda_ext.compiled_targets()})"
    count, why = cuda_ext.device_count()
    if count == 0:
        return BackendStatus(False, f"{built}, but no CUDA device: {why}")
    if not torch.cuda.is_available():
        return BackendStatus(False, f"{built}; the driver sees {count} device(s) but this torch build has no CUDA")
    return BackendStatus(True, built)


@cache
def _triton_status(interpreted: bool) -> BackendStatus:
    # Cached per interpreter setting: GPU calls ask on every launch, and package metadata is slow to read.
    if importlib.util.find_spec("triton") is None:
        return BackendStatus(False, "triton is not installed (pip install 'midlevel_fast[triton]')")
    version = importlib.metadata.version("triton")
    if interpreted:
        try:
            # Only under the interpreter (no GPU to hide errors of): Triton 3.3's autotune asks for an active GPU
            # driver when our kernels are defined, and raises "0 active drivers" from inside Triton.
            importlib.import_module("midlevel_fast.ops.crop_resize.triton")
        except RuntimeError as exc:
            return BackendStatus(False, f"triton {version} cannot define its kernels under TRITON_INTERPRET=1 "
                                        f"without a GPU driver ({exc}): upgrade triton (3.9 works) or use "
                                        "backend='torch'")
        return BackendStatus(True, f"Triton {version} kernels under TRITON_INTERPRET=1: CPU tensors, slow, for tests")
    if not torch.cuda.is_available():
        return BackendStatus(False, f"triton {version} is installed, but there is no CUDA device "
                                    "(TRITON_INTERPRET=1 runs the kernels on CPU tensors, for tests)")
    return BackendStatus(True, f"Triton {version} kernels on CUDA tensors")


def backends() -> dict[str, BackendStatus]:
    """Status of each compiled crop-resize backend: ``cpu``, ``cuda``, ``triton`` (the pure-torch ``torch`` always
    works and is not listed)."""
    return {
        "cpu": BackendStatus(cpu_ext is not None, _cpu_detail),
        "cuda": _cuda_status(),
        "triton": _triton_status(triton_interpreted()),
    }
