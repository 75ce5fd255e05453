"""One convolution with its activation and residual sum: ``act(conv(x, weight) + bias + residual)``.

The backbones compute every convolution through :func:`conv2d`. Unfused it is the plain torch sequence (the
reference, differentiable, any device). Fused (``fused=True``, set by
:func:`midlevel_fast.backbones.prepared.prepared` on CPU inference copies) it is one oneDNN call,
``torch.ops.mkldnn._convolution_pointwise``, the op torch.compile's CPU backend emits for the same pattern: the
activation and the residual are applied to the output tile while it is still in cache, instead of as separate
passes over memory (ReLU6 alone was 13 % of a Lite0 dense call). It has no autograd, so only frozen copies use it.

Layouts: ``x``, ``residual`` NCHW tensors in any memory format, ``weight`` ``(out, in/groups, kh, kw)``; all of
one dtype (float32 or bfloat16). The fused call returns channels_last when ``x`` is channels_last.

oneDNN's AMX kernels (torch 2.13's oneDNN, on Sapphire Rapids and later) compute strided convolutions whose output
is one column wide wrongly in bfloat16 and int8 (garbage such as 1e29 in the lower rows once the output has about
five rows or more; ``F.conv2d`` itself, not only the fused op; not with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``).
:func:`single_column_extra` gives the zero columns that make such an output two columns wide; the extra column is
cut off afterwards (the first column reads the same inputs).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["relu", "relu6"] | None

# oneDNN post-op names and their scalars for each activation (ReLU6 is hardtanh on [0, 6]).
ONEDNN_UNARY: dict[Activation, tuple[str, list[float]]] = {None: ("none", []), "relu": ("relu", []),
                                                           "relu6": ("hardtanh", [0.0, 6.0])}


def _activate(y: Tensor, act: Activation) -> Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return F.relu6(y)
    return y


def conv_padding(conv: nn.Conv2d) -> int:
    """The (symmetric, row) padding of ``conv`` as :func:`conv2d` takes it; ``ValueError`` for a string padding
    such as ``"same"``, which :func:`conv2d` does not take."""
    if isinstance(conv.padding, str):
        raise ValueError(f"conv2d takes numeric padding, got {conv.padding!r}")
    return conv.padding[0]


def single_column_extra(width: int, kernel: int, stride: int, padding: int) -> int:
    """Columns of zeros to append to an input ``width`` wide (padded by ``padding`` on each side) so that a
    strided convolution's output is not one column wide (see the module docstring): ``stride``, else 0."""
    out_width = (width + 2 * padding - kernel) // stride + 1
    return stride if stride > 1 and out_width == 1 else 0


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, *, stride: int = 1,
           padding: int | tuple[int, int] = 0, groups: int = 1,
           act: Activation = None, residual: Tensor | None = None, fused: bool = False) -> Tensor:
    """``act(conv2d(x, weight, bias, stride, padding, groups) + residual)``; ``padding`` is symmetric, one value or
    ``(rows, cols)``; ``residual`` (optional) has the output's shape. ``fused`` computes it in one oneDNN call
    (CPU, no autograd)."""
    if act not in ONEDNN_UNARY:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(map(str, ONEDNN_UNARY))}")
    cols = padding if isinstance(padding, int) else padding[1]
    extra = single_column_extra(x.shape[-1], weight.shape[-1], stride, cols) if x.device.type == "cpu" else 0
    if extra:
        widened = None if residual is None else F.pad(residual, (0, 1))
        y = conv2d(F.pad(x, (0, extra)), weight, bias, stride=stride, padding=padding, groups=groups, act=act,
                   residual=widened, fused=fused)
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        return y[..., :1].contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if not fused:
        y = F.conv2d(x, weight, bias, stride, padding, 1, groups)
        return _activate(y if residual is None else y + residual, act)
    unary, scalars = ONEDNN_UNARY[act]
    pad = [padding, padding] if isinstance(padding, int) else list(padding)
    geometry = (pad, [stride, stride], [1, 1], groups)
    if residual is None:
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry, unary, scalars, "")
    # The activation after a residual sum stays a separate pass: torch's fallback for that fusion has no bfloat16
    # kernel (no backbone here activates after its residual: Lite0's project convolutions are linear).
    y = torch.ops.mkldnn._convolution_pointwise.binary(x, residual, weight, bias, *geometry, "add", 1.0, None, [],
                                                       None)
    return _activate(y, act)
