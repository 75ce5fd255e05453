"""The arguments of :func:`midlevel_fast.crop_resize`, defined once for the dispatcher and every backend.

:class:`CropResizeParams` is the argument list besides the image and the boxes, built and validated from the
public op's arguments by :func:`as_params`; :class:`ImageView` is an image's shape and element strides, whatever
its layout (:func:`image_view`). The C++ side (``csrc/crop_resize_params.h``) defines the same two structs, field
for field; :meth:`CropResizeParams.native` and :meth:`ImageView.native` build them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from types import ModuleType
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PADDING_MODES: tuple[str, ...] = ("edge", "reflect", "zeros")
OUT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16)
MEMORY_FORMATS: tuple[torch.memory_format, ...] = (torch.contiguous_format, torch.channels_last)
BACKENDS: tuple[str, ...] = ("auto", "cpu", "cuda", "triton", "torch")

# Coordinates beyond this are certainly a bug upstream; the bound also caps the filter length of a box.
MAX_COORD = float(2**20)


@dataclass(frozen=True)
class CropResizeParams:
    """Everything that says how boxes become output crops, validated (see :func:`as_params`).

    ``out_h × out_w`` output pixels per box; ``mean``/``std``: one value per image channel, in [0, 1] units;
    ``antialias``: widen the filter by the shrink factor; ``padding_mode``: one of :data:`PADDING_MODES`;
    ``out_dtype``: one of :data:`OUT_DTYPES`; ``channels_last``: the output's memory layout is
    ``(N, out_h, out_w, C)`` (torch's channels_last) instead of contiguous ``(N, C, out_h, out_w)``;
    ``num_threads``: CPU threads (the other backends ignore it).
    """

    out_h: int
    out_w: int
    mean: Sequence[float]
    std: Sequence[float]
    antialias: bool
    padding_mode: str
    out_dtype: torch.dtype
    channels_last: bool
    num_threads: int

    def out_shape(self, n_boxes: int) -> tuple[int, int, int, int]:
        """``(N, C, out_h, out_w)``: the output of ``n_boxes`` boxes (in :attr:`memory_format`)."""
        return n_boxes, len(self.mean), self.out_h, self.out_w

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def native(self, ext: ModuleType) -> Any:
        """The C++ ``CropResizeParams`` of the extension module ``ext`` (``midlevel_fast._C`` or ``._cuda``)."""
        return ext.CropResizeParams(
            out_h=self.out_h, out_w=self.out_w, mean=list(self.mean), std=list(self.std), antialias=self.antialias,
            padding_mode=getattr(ext.Padding, self.padding_mode),
            out_dtype=getattr(ext.OutDType, str(self.out_dtype).removeprefix("torch.")),
            channels_last=self.channels_last, num_threads=self.num_threads,
        )


class ImageView(NamedTuple):
    """Shape and element strides of an image tensor along (row, column, channel), whatever its layout;
    ``uint8``: uint8 HWC with values 0..255 (else float32 CHW)."""

    height: int
    width: int
    channels: int
    stride_y: int
    stride_x: int
    stride_c: int
    uint8: bool

    def native(self, ext: ModuleType, data: int) -> Any:
        """The C++ ``ImageView`` of the extension module ``ext`` for the image at address ``data``."""
        return ext.ImageView(data=data, **self._asdict())


def image_view(image: torch.Tensor) -> ImageView:
    """The :class:`ImageView` of a validated image: uint8 HWC or float32 CHW."""
    if image.dtype == torch.uint8:
        (h, w, c), (sy, sx, sc) = image.shape, image.stride()
    else:
        (c, h, w), (sc, sy, sx) = image.shape, image.stride()
    return ImageView(int(h), int(w), int(c), int(sy), int(sx), int(sc), image.dtype == torch.uint8)


def as_size(size: Any) -> tuple[int, int]:
    """``size`` (int or ``(h, w)``) as a pair of positive ints; raises ``ValueError`` naming ``size``."""
    pair = (size, size) if isinstance(size, Integral) else tuple(size) if isinstance(size, Sequence) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"size must be an int or an (h, w) pair of ints, got {size!r}")
    if pair[0] <= 0 or pair[1] <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(pair[0]), int(pair[1])


def as_channel_values(name: str, value: Any, channels: int) -> tuple[float, ...]:
    """``mean``/``std`` as one float per channel; a scalar is broadcast, 3 values on a grey image are averaged."""
    vals = [float(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64))]
    if len(vals) == 1:
        vals = vals * channels
    elif len(vals) == 3 and channels == 1:
        vals = [sum(vals) / 3.0]
    if len(vals) != channels:
        raise ValueError(f"{name} needs 1 or {channels} values, got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be finite, got {vals}")
    if name == "std" and not all(v > 0 for v in vals):
        raise ValueError(f"std must be > 0, got {vals}")
    return tuple(vals)


def as_params(channels: int, size: Any, mean: Any, std: Any, antialias: Any, padding_mode: Any, out_dtype: Any,
              num_threads: Any, memory_format: Any = torch.contiguous_format) -> CropResizeParams:
    """:func:`crop_resize`'s arguments for an image of ``channels`` channels, validated; raises ``ValueError``
    naming the argument. ``num_threads=None`` means ``torch.get_num_threads()``."""
    out_h, out_w = as_size(size)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype}")
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    threads = int(num_threads) if num_threads is not None else torch.get_num_threads()
    if threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads!r}")
    return CropResizeParams(out_h, out_w, as_channel_values("mean", mean, channels),
                            as_channel_values("std", std, channels), bool(antialias), padding_mode, out_dtype,
                            memory_format == torch.channels_last, threads)
