"""The convolution of EfficientNet-Lite0 (:mod:`midlevel_fast.backbones.efficientnet_lite`): TensorFlow "SAME"
padding recomputed from each input size (stride 1 pads symmetrically, stride 2 pads ``total // 2`` before and the
rest after), a bias (the folded BatchNorm), and its activation and residual sum computed with it; the fused and
int8 copies (:mod:`midlevel_fast.backbones.prepared`, :mod:`midlevel_fast.backbones.int8`) switch it per module.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from midlevel_fast.backbones.fused import Activation, conv2d, conv_padding


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding and a bias (the folded BatchNorm), computed with its activation and
    residual sum through :func:`midlevel_fast.backbones.fused.conv2d` (fused in prepared copies), or by its
    ``int8`` twin (:class:`midlevel_fast.backbones.int8.Int8Conv`, set in int8 copies), whose inputs and outputs
    are uint8 activations."""

    fused = False
    # An Int8Conv on int8 copies, called as int8(x, act, residual). Its tensors may be int8's QuantizedActivation,
    # a type this module cannot import (midlevel_fast.backbones.int8 imports it), hence the loose signature.
    int8: Callable[..., Any] | None = None

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # Stride 1 "SAME" with an odd kernel is symmetric, so the convolution pads by itself without a copy.
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups)

    def forward(self, x: Tensor, act: Activation = None, residual: Tensor | None = None) -> Tensor:
        """``act(conv(x) + residual)``."""
        if self.int8 is not None:
            return self.int8(x, act, residual)
        k, s = self.kernel_size[0], self.stride[0]
        if s == 1:
            return conv2d(x, self.weight, self.bias, padding=conv_padding(self), groups=self.groups, act=act,
                          residual=residual, fused=self.fused)
        # Fused, the cheaper copy wins: a cropped output copies cout / 4 channels per input pixel when it is
        # consumed, a padded input cin. The stem (3 -> 32) pads its input: 5 ms of crops in a dense call saved.
        if self.fused and residual is None and 4 * self.in_channels > self.out_channels:
            out, (dy, dx) = self.strided_with_border(x, act)
            return out[:, :, dy:, dx:]
        (top, bottom), (left, right) = (same_padding(n, k, s) for n in x.shape[-2:])
        x = F.pad(x, (left, right, top, bottom))
        return conv2d(x, self.weight, self.bias, stride=s, groups=self.groups, act=act, residual=residual,
                      fused=self.fused)

    def strided_with_border(self, x: Tensor, act: Activation) -> tuple[Tensor, tuple[int, int]]:
        """The fused stride-2 "SAME" convolution without a padded copy of ``x`` (that copy of a 96-channel map of
        the largest planes was 10-14 % of a dense Lite0 call), as ``(out, (dy, dx))``: the "SAME" output is
        ``out[:, :, dy:, dx:]``. Along an axis padded symmetrically (odd lengths) the convolution pads by itself
        and ``d = 0``. Along an axis with one pixel more after than before (even lengths), it pads
        ``before + 2`` on both sides: that puts output ``j`` on the input window of "SAME" output ``j - 1``,
        so ``out`` has one extra leading row (column), ``d = 1``, which the caller drops. A caller whose next
        operation is pointwise (a 1x1 convolution) drops it after that operation, on the smaller map."""
        k, s = self.kernel_size[0], self.stride[0]
        pads, border = [], []
        for n in x.shape[-2:]:
            before, after = same_padding(n, k, s)
            shift = int(after > before)
            pads.append(before + 2 * shift)
            border.append(shift)
        out = conv2d(x, self.weight, self.bias, stride=s, padding=(pads[0], pads[1]), groups=self.groups, act=act,
                     fused=True)
        return out, (border[0], border[1])


def same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding ``(before, after)`` of an axis of ``length``: ``total // 2`` before."""
    total = max((-(-length // stride) - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2
