"""precision="auto" per CPU: the choice for each kind of CPU with its features mocked, and the /proc/cpuinfo
parser on real-looking texts."""
from __future__ import annotations

import pytest
import torch

from midlevel_fast.runtime import precision as P

CPU, GPU = torch.device("cpu"), torch.device("cuda")
AMX_XEON = frozenset({"amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"} &
                     set(P.MATRIX_FLAGS))
EPYC_ZEN4 = frozenset({"avx512_bf16", "avx512_vnni", "avx512f", "avx2"})
SKYLAKE = frozenset({"avx512f", "avx2"})
AVX2_ONLY = frozenset({"avx2"})


@pytest.mark.parametrize("flags, capability, dense", [
    (AMX_XEON, "AVX512", "bf16"),
    (EPYC_ZEN4, "AVX512", "bf16"),
    (EPYC_ZEN4, "AVX2", "fp32"),    # ATEN_CPU_CAPABILITY=avx2: treated as an AVX2-only CPU
    (SKYLAKE, "AVX512", "fp32"),    # AVX-512 without native bf16: oneDNN would emulate it
    (AVX2_ONLY, "AVX2", "fp32"),
    (frozenset(), "DEFAULT", "fp32"),
])
def test_auto_precision_per_cpu(flags, capability, dense):
    assert P.auto_precision("dense", CPU, flags, capability) == dense
    assert P.auto_precision("batched", CPU, flags, capability) == dense
    # The naive loop is the exact reference: float32 whatever the CPU; so is any GPU under "auto".
    assert P.auto_precision("naive", CPU, flags, capability) == "fp32"
    assert P.auto_precision("dense", GPU, flags, capability) == "fp32"


def test_resolve_reads_this_machine(monkeypatch):
    monkeypatch.setattr(P, "cpu_flags", lambda: AMX_XEON)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert P.resolve_precision("auto", "dense", CPU) == "bf16"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert P.resolve_precision("auto", "dense", CPU) == "fp32"
    assert P.resolve_precision("bf16", "batched", CPU) == "bf16"  # an explicit choice is kept
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve_precision("fp16", "dense", CPU)


def test_parse_cpu_flags():
    text = ("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni vaes\n\n"
            "processor\t: 1\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni vaes\n")
    assert P.parse_cpu_flags(text) == EPYC_ZEN4
    assert P.parse_cpu_flags("processor : 0\n") == frozenset()
    # A flag must match whole: "avx512_bf16x" is not avx512_bf16.
    assert P.parse_cpu_flags("flags : avx512_bf16x amx_int8\n") == frozenset({"amx_int8"})


def test_describe_cpu_names_torch_level():
    line = P.describe_cpu()
    assert f"(torch: {torch.backends.cpu.get_cpu_capability()})" in line
