"""Oracle of :class:`midlevel_fast.backbones.int8.Int8Conv`: the int8 scheme's arithmetic written out in float64
(dequantise, convolve with the dequantised per-channel int8 weights, add bias and residual, activate,
requantise). Shares no code with the package."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def quantize_reference(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """uint8 ``clamp(round(x / scale) + zero_point, 0, 255)``."""
    return torch.clamp(torch.round(x.double() / scale) + zero_point, 0, 255).to(torch.uint8)


def dequantize_reference(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    return (q.double() - zero_point) * scale


def same_pads_reference(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one axis: ``ceil(n / stride)`` outputs, the smaller half before."""
    out = (n + stride - 1) // stride
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


def weight_reference(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` quantised per output channel (``scale = max |w| / 127``, symmetric) and dequantised, float64:
    each value rounded to nearest; in kernels wider than 1x1, the values that lost most by rounding (stable
    order) then move one step each until the integer sum is ``round(sum(w) / scale)``."""
    rows = []
    for w in weight.float().flatten(1):
        scale = max(w.abs().max().item(), 1e-8) / 127
        x = (w / torch.tensor(scale, dtype=torch.float32)).tolist()
        q = [round(v) for v in x]
        if weight.shape[-1] > 1:
            missing = round(sum(x)) - sum(q)
            step = 1 if missing > 0 else -1
            for i in sorted(range(len(x)), key=lambda i: -(x[i] - q[i]) * step)[:abs(missing)]:
                q[i] += step
        rows.append([min(max(v, -128), 127) * scale for v in q])
    return torch.tensor(rows, dtype=torch.float64).view(weight.shape)


def int8_conv_reference(qx: torch.Tensor, x_q: tuple[float, int], weight: torch.Tensor, bias: torch.Tensor,
                        stride: int, groups: int, act: str | None, residual: tuple[torch.Tensor, float, int] | None,
                        out_q: tuple[float, int] | None) -> torch.Tensor:
    """"SAME" convolution of the uint8 ``qx`` (real ``(qx - zp) * scale``) with ``weight`` quantised by
    :func:`weight_reference`, ``+ bias + residual``, ReLU6 if ``act == "relu6"``; uint8 with
    ``out_q``, or float64 for ``out_q=None``."""
    x = dequantize_reference(qx, *x_q)
    w = weight_reference(weight)
    k = weight.shape[-1]
    (top, bottom), (left, right) = (same_pads_reference(n, k, stride) for n in x.shape[-2:])
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), w, bias.double(), stride, 0, 1, groups)
    if residual is not None:
        y = y + dequantize_reference(*residual)
    if act == "relu6":
        y = y.clamp(0, 6)
    return y if out_q is None else quantize_reference(y, *out_q)
