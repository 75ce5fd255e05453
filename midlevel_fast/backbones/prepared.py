"""Inference copies of a frozen backbone, one per precision, made once and reused by every call.

Autocast casts each weight to bfloat16 again on every forward: on AlexNet's FC6/FC7 (55 M weights) that was
a quarter of a dense call, and on Lite0 6 % of it. :func:`prepared` instead casts the weights once into a copy
of the backbone held in ``dtype`` (channels_last, as the backbone keeps them), whose convolutions run fused with
their activations on the CPU (:mod:`midlevel_fast.backbones.fused`). The copy is remade when the backbone's
weights change (a new tensor, or an in-place update such as ``load_top``), so it never serves stale weights.

Inputs to the copy must be in its dtype (``x.to(copy_dtype(copy))``); its outputs are in that dtype too. The
``"int8"`` copy (EfficientNet-Lite0 on CPU only, :mod:`midlevel_fast.backbones.int8`) takes and returns float32
and computes every convolution in int8 with the activation ranges of ``backbone.int8_ranges`` (if set) or the
shipped ones.
oneDNN's own blocked weight prepacking (``torch.ops.mkldnn._reorder_convolution_weight``) was measured and
left out: with input sizes that change per scale it re-reordered on every call and was 1.6-3.5x slower.
"""
from __future__ import annotations

import copy
import weakref
from typing import overload

import torch
from torch import nn

from midlevel_fast.backbones.base import Backbone
from midlevel_fast.backbones.same_conv import SameConv2d
from midlevel_fast.backbones.int8 import install_int8
from midlevel_fast.backbones.layout import BackboneLike, WindowLayout

# Precision name -> the dtype of its prepared copy's weights, inputs and outputs (int8 copies quantise inside).
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}

_COPIES: weakref.WeakKeyDictionary[Backbone, dict[tuple[str, str], tuple[tuple, Backbone]]] = (
    weakref.WeakKeyDictionary())


def _fingerprint(module: nn.Module) -> tuple:
    """Changes whenever a parameter is replaced or modified in place. Tensors made under ``inference_mode`` keep
    no version counter (and cannot be modified in place outside it), so their storage alone identifies them:
    replace such a parameter, rather than update it in place inside ``inference_mode``, for the copy to follow."""
    return tuple((p.data_ptr(), None if p.is_inference() else p._version) for p in module.parameters())


def copy_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a backbone (or prepared copy) computes in: that of its first parameter."""
    return next(module.parameters()).dtype


@overload
def prepared(backbone: Backbone, precision: str) -> Backbone: ...
@overload
def prepared(backbone: WindowLayout, precision: str) -> WindowLayout: ...
@overload
def prepared(backbone: BackboneLike, precision: str) -> BackboneLike: ...


def prepared(backbone: BackboneLike, precision: str) -> BackboneLike:
    """``backbone`` (a frozen :class:`midlevel_fast.backbones.Backbone`, or a
    :class:`~midlevel_fast.backbones.layout.WindowLayout` of one) ready to run in ``precision`` (a key of
    :data:`DTYPES`) on its device: a cached copy with weights cast once and, on CPU, fused convolutions (or int8
    ones). On a device without oneDNN in float32 it is ``backbone`` itself. Raises ``ValueError`` for another
    precision, and for ``"int8"`` off the CPU, on another backbone than Lite0, or without ranges for its
    weights."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)} here, got {precision!r}")
    if isinstance(backbone, WindowLayout):
        return WindowLayout(prepared(backbone.inner, precision))
    device = next(backbone.parameters()).device
    fused = device.type == "cpu" and torch.backends.mkldnn.is_available()
    if precision == "fp32" and not fused:
        return backbone
    if precision == "int8" and not fused:
        raise ValueError(f"precision 'int8' runs on the CPU (oneDNN), not on {device}; use 'bf16' or 'fp32' there")
    ranges = getattr(backbone, "int8_ranges", None)
    key = precision, str(device)
    stamp = _fingerprint(backbone), tuple(sorted(ranges.items())) if precision == "int8" and ranges else None
    per_backbone = _COPIES.setdefault(backbone, {})
    held = per_backbone.get(key)
    if held is not None and held[0] == stamp:
        return held[1]
    twin = copy.deepcopy(backbone).to(DTYPES[precision]).eval().requires_grad_(False)
    if precision == "int8":
        install_int8(twin, ranges)
    else:
        for module in twin.modules():
            # the modules with a fused switch: the backbone's own (a class attribute) and Lite0's convolutions
            if isinstance(module, (Backbone, SameConv2d)):
                module.fused = fused
    per_backbone[key] = (stamp, twin)
    return twin
