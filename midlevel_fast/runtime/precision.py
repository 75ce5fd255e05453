"""Which precision the trunk runs in: the user's choice, or for ``"auto"`` the one this CPU's matrix units run
fastest at VOC-level accuracy.

Measured (docs/precision.md): on CPUs with native bfloat16 dot products (AVX512-BF16, or AMX-BF16 tiles) a
bfloat16 dense pass is about twice as fast as float32 and moves VOC val mAP by well under a point; without them
oneDNN emulates bfloat16 and it is slower than float32. ``"auto"`` therefore picks ``"bf16"`` for the dense mode
when the CPU has those units *and* torch dispatches AVX-512 kernels (``torch.backends.cpu.get_cpu_capability()``,
which ``ATEN_CPU_CAPABILITY=avx2`` lowers to emulate an AVX2-only CPU), else ``"fp32"``; the same for the
``"batched"`` mode (VOC val mAP 88.77 in both precisions, 1.6-2.1x faster in bf16). ``"naive"``, the obvious
per-patch loop every other mode is checked against, stays float32. ``"int8"`` (EfficientNet-Lite0 on the CPU,
:mod:`midlevel_fast.backbones.int8`) is only ever chosen by the user: on the CPU measured it was 1.3-1.5x faster
than bf16 at the same VOC mAP, but it exists only for Lite0 with calibrated ranges and its features are twice as
far from float32 as bf16's (docs/precision.md).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, get_args

import torch

Precision = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
# The /proc/cpuinfo flags that say what the CPU's matrix and vector units compute natively.
MATRIX_FLAGS: tuple[str, ...] = ("amx_bf16", "amx_fp16", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512_vnni",
                                 "avx_vnni", "avx512f", "avx2")
_NATIVE_BF16 = frozenset({"amx_bf16", "avx512_bf16"})


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The :data:`MATRIX_FLAGS` among the ``flags`` lines of a ``/proc/cpuinfo`` text."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags.intersection(MATRIX_FLAGS))


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's :data:`MATRIX_FLAGS` (from ``/proc/cpuinfo``; where there is none, ``avx512_bf16`` stands for
    whatever native bfloat16 oneDNN reports)."""
    path = Path("/proc/cpuinfo")
    if path.is_file():
        return parse_cpu_flags(path.read_text(errors="replace"))
    return frozenset({"avx512_bf16"}) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else frozenset()


def describe_cpu() -> str:
    """One line naming the CPU's matrix features and torch's kernel level, e.g. ``"avx512_bf16 avx512_vnni ...
    (torch: AVX512)"``: what the benchmarks print beside their peaks."""
    flags = " ".join(f for f in MATRIX_FLAGS if f in cpu_flags()) or "no matrix features"
    return f"{flags} (torch: {torch.backends.cpu.get_cpu_capability()})"


def auto_precision(mode: str, device: torch.device, flags: frozenset[str], capability: str) -> str:
    """``"bf16"`` or ``"fp32"`` for ``mode`` on ``device``, given the CPU ``flags`` and torch's CPU
    ``capability`` (module docstring)."""
    native_bf16 = bool(flags & _NATIVE_BF16) and capability.upper().startswith("AVX512")
    return "bf16" if mode in ("dense", "batched") and device.type == "cpu" and native_bf16 else "fp32"


def resolve_precision(precision: str, mode: str, device: torch.device) -> str:
    """``precision`` (one of :data:`PRECISIONS`) as the precision to run: ``"fp32"``, ``"bf16"`` or ``"int8"``,
    ``"auto"`` resolved for this machine by :func:`auto_precision`. Raises ``ValueError`` for an unknown name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return auto_precision(mode, device, cpu_flags(), torch.backends.cpu.get_cpu_capability())
