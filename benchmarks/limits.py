"""The machine's limits, measured in the benchmark's own run: fp32 sgemm, bf16 GEMM and a bf16, fp32 and int8
convolution of a trunk shape, plus FLOP counts of a backbone's dense phase, per layer.

Every phase is reported against the limit of its own dtype: fp32 phases against the fp32 sgemm, bf16 phases
against the bf16 convolution (on AMX CPUs about ten times the fp32 rate, on AVX512-BF16 about twice), int8
phases against the int8 convolution (oneDNN's u8 x s8 kernel: VNNI, or AMX-INT8 tiles).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from midlevel_fast.backbones.same_conv import SameConv2d
from midlevel_fast.backbones.int8 import Int8Conv, QuantizedActivation
from midlevel_fast.runtime.precision import describe_cpu

# AlexNet's conv2 on a batch of 8 patches (64 x 55 x 55 -> 192 filters of 5 x 5), channels_last: the trunk shape
# of the limit convolution.
LIMIT_CONV = dict(batch=8, cin=64, size=55, cout=192, kernel=5)


def median_seconds(fn: Callable[[], object], repeats: int = 7) -> float:
    """Median wall time of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def gemm_gflops(dtype: torch.dtype, n: int) -> float:
    """GFLOP/s of an ``n``³ ``torch.mm`` in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / median_seconds(lambda: torch.mm(a, b)) / 1e9


def conv_gflops(dtype: torch.dtype) -> float:
    """GFLOP/s of the :data:`LIMIT_CONV` convolution in ``dtype``, channels_last, weights already in ``dtype``."""
    c = LIMIT_CONV
    x = torch.randn(c["batch"], c["cin"], c["size"], c["size"]).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c["cout"], c["cin"], c["kernel"], c["kernel"]).to(dtype)
    w = w.contiguous(memory_format=torch.channels_last)
    pad = c["kernel"] // 2
    flops = 2 * c["batch"] * c["cout"] * c["size"] ** 2 * c["cin"] * c["kernel"] ** 2
    with torch.inference_mode():
        return flops / median_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=pad)) / 1e9


def int8_conv_gops() -> float:
    """Operations per second (multiply and add counted as two, as for floats), in G, of the :data:`LIMIT_CONV`
    convolution in int8 (uint8 activations in and out, int8 weights per channel, oneDNN via
    :class:`midlevel_fast.backbones.int8.Int8Conv`), channels_last."""
    c = LIMIT_CONV
    conv = SameConv2d(c["cin"], c["cout"], c["kernel"])
    int8 = Int8Conv(conv, (0.02, 128), (0.05, 0))
    x = torch.randint(0, 256, (c["batch"], c["cin"], c["size"], c["size"]), dtype=torch.uint8)
    x = QuantizedActivation(x.contiguous(memory_format=torch.channels_last), 0.02, 128)
    ops = 2 * c["batch"] * c["cout"] * c["size"] ** 2 * c["cin"] * c["kernel"] ** 2
    return ops / median_seconds(lambda: int8(x, "relu")) / 1e9


@dataclass(frozen=True)
class Limits:
    """GFLOP/s of this machine's limits, and its CPU features as a line."""

    sgemm: float
    bf16_gemm: float
    fp32_conv: float
    bf16_conv: float
    int8_conv: float
    cpu: str

    def of(self, precision: str) -> tuple[str, float]:
        """The limit a phase in ``precision`` is measured against, named: fp32 sgemm, the bf16 or the int8
        convolution."""
        return {"bf16": ("bf16 conv", self.bf16_conv), "int8": ("int8 conv", self.int8_conv)}.get(
            precision, ("fp32 sgemm", self.sgemm))

    def as_info(self) -> dict[str, object]:
        return {"cpu": self.cpu, "sgemm_GFLOPs": round(self.sgemm), "bf16_gemm_GFLOPs": round(self.bf16_gemm),
                "fp32_conv_GFLOPs": round(self.fp32_conv), "bf16_conv_GFLOPs": round(self.bf16_conv),
                "int8_conv_GOPs": round(self.int8_conv)}


def measure_limits() -> Limits:
    """All limits, measured now (about 10 s on 2 cores)."""
    return Limits(sgemm=gemm_gflops(torch.float32, 2048), bf16_gemm=gemm_gflops(torch.bfloat16, 4096),
                  fp32_conv=conv_gflops(torch.float32), bf16_conv=conv_gflops(torch.bfloat16),
                  int8_conv=int8_conv_gops(), cpu=describe_cpu())


def phase_flops(phase: Callable[[torch.Tensor], object], planes: list[torch.Tensor],
                module: torch.nn.Module) -> tuple[int, dict[str, int]]:
    """``(total, per_layer)`` FLOPs (2 per multiply-add) of ``phase`` over ``planes`` on the unfused float32
    ``module``: the total counted by torch's FlopCounterMode (functional convolutions and GEMMs included), and
    per convolution module of ``module`` (its dotted name, e.g. ``_blocks.3._expand_conv``), from the shapes its
    forward hook sees: ``2 · output elements · in_channels/groups · kh · kw``."""
    per_layer: dict[str, int] = {}

    def count(name: str):
        def hook(conv: torch.nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
            kh, kw = conv.kernel_size
            per_layer[name] = per_layer.get(name, 0) + 2 * out.numel() * conv.in_channels // conv.groups * kh * kw
        return hook

    handles = [m.register_forward_hook(count(name)) for name, m in module.named_modules()
               if isinstance(m, torch.nn.Conv2d)]
    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), counter:
            for p in planes:
                phase(p)
    finally:
        for h in handles:
            h.remove()
    return counter.get_total_flops(), per_layer
