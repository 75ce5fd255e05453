"""Tap tables of crop_resize's filter as torch ops, for the Triton kernel and the pure-torch backend, and the
normalisation constants they apply (the C++ kernels compute both themselves, with ``csrc/taps.h`` and
``csrc/crop_resize_params.h``).

Same filter as the C++ kernel's ``axis_taps`` (and the oracle's ``tests/oracle/crop_resize.py``): output ``j``
of an axis with box ``[b0, b1]`` is centred at ``c = b0 + (j + 0.5)·(b1 − b0)/n_out``; with ``f`` the filter scale
(``max(shrink, 1)`` when antialiasing, else 1) its ``ceil(2f)`` taps start at the first pixel whose centre lies
strictly inside ``(c − f, c + f)`` and weigh ``max(0, 1 − |x + 0.5 − c|/f)``, normalised to sum to 1 over the
taps, in float64, rounded to float32 once. Tap indices are mapped through the padding mode.

The tables are plain torch ops on the boxes' device, so on a GPU they are computed there, in one pass over all
boxes, and the Triton kernel only reads them. Layout ``[box][tap][output]``: neighbouring GPU threads handle
neighbouring outputs, so their table reads are coalesced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from midlevel_fast.ops.crop_resize.schema import PADDING_MODES, CropResizeParams, ImageView


# A dataclass, not a NamedTuple: fields named index and count would shadow tuple's methods of those names.
@dataclass(frozen=True)
class AxisTaps:
    """Filter taps of one axis for every box.

    ``index (N, T, n_out)`` int32: source pixel of each tap after the padding mode, ``-1`` for a tap that reads
    zero (``padding_mode="zeros"`` outside the image). ``weight (N, T, n_out)`` float32, 0 for such taps.
    ``count (N,)`` int32: taps used by each box; taps ``count[n] .. T-1`` of box ``n`` have weight 0.
    ``T`` is the largest count over the boxes (1 for no boxes).
    """

    index: torch.Tensor
    weight: torch.Tensor
    count: torch.Tensor


def map_index(x: torch.Tensor, n: int, padding_mode: str) -> torch.Tensor:
    """Source pixel read by tap positions ``x`` (int64) on an axis of ``n`` pixels; ``-1`` reads zero."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if padding_mode == "edge":
        return x.clamp(0, n - 1)
    if padding_mode == "reflect":
        if n == 1:
            return torch.zeros_like(x)
        # Mirror without repeating the edge pixel, periodic so that far-away taps stay defined.
        period = 2 * (n - 1)
        m = torch.remainder(x, period)
        return torch.where(m < n, m, period - m)
    return torch.where((x >= 0) & (x < n), x, torch.full_like(x, -1))


def axis_taps(b0: torch.Tensor, b1: torch.Tensor, n_in: int, n_out: int, antialias: bool, padding_mode: str,
              device: torch.device | str | None = None) -> AxisTaps:
    """Taps of all boxes along one axis: ``b0``, ``b1`` are the boxes' float64 ``(N,)`` start and end on that
    axis (``b1 >= b0``), ``n_in`` the image length, ``n_out`` the output length. The tables are built on
    ``device`` (default: that of ``b0``); pass CPU boxes so that the table width is known without a device sync.
    """
    dev = torch.device(device) if device is not None else b0.device
    scale = (b1.to(torch.float64) - b0.to(torch.float64)) / n_out
    fscale = scale.clamp(min=1.0) if antialias else torch.ones_like(scale)
    count = torch.ceil(2.0 * fscale).to(torch.int64)
    taps = int(count.max()) if count.numel() else 1
    b0, scale, fscale, count = (v.to(dev) for v in (b0.to(torch.float64), scale, fscale, count))
    j = torch.arange(n_out, dtype=torch.float64, device=dev)
    center = b0[:, None] + (j[None, :] + 0.5) * scale[:, None]  # (N, n_out)
    first = torch.floor(center - fscale[:, None] - 0.5).to(torch.int64) + 1
    t = torch.arange(taps, device=dev)
    x = first[:, None, :] + t[None, :, None]  # (N, T, n_out)
    # Multiply by the reciprocal as the C++ kernel does, so that both round alike.
    d = ((x.to(torch.float64) + 0.5 - center[:, None, :]) * (1.0 / fscale)[:, None, None]).abs()
    used = t[None, :, None] < count[:, None, None]
    w = torch.where((d < 1.0) & used, 1.0 - d, torch.zeros_like(d))
    weight = w / w.sum(dim=1, keepdim=True)
    index = map_index(x, n_in, padding_mode)
    weight = torch.where(index < 0, torch.zeros_like(weight), weight)
    return AxisTaps(index.to(torch.int32).contiguous(), weight.to(torch.float32).contiguous(), count.to(torch.int32))


class KernelSetup(NamedTuple):
    """Everything a crop_resize kernel reads besides the image: the taps of both axes and the per-channel
    affine map ``out = filtered · scale[c] + shift[c]`` (uint8→[0,1] scaling and ``(x − mean)/std`` folded),
    as float32 values held in Python floats."""

    rows: AxisTaps
    cols: AxisTaps
    scale: list[float]
    shift: list[float]


def kernel_setup(boxes: torch.Tensor, image: ImageView, params: CropResizeParams,
                 device: torch.device) -> KernelSetup:
    """Tap tables on ``device`` for validated float64 ``boxes (N, 4)`` (best on the CPU, see :func:`axis_taps`) of
    an image of layout ``image``, and the normalisation constants (:func:`normalisation`).
    """
    b = boxes.to(dtype=torch.float64)
    scale, shift = normalisation(params.mean, params.std, image.uint8)
    return KernelSetup(
        rows=axis_taps(b[:, 1], b[:, 3], image.height, params.out_h, antialias=params.antialias,
                       padding_mode=params.padding_mode, device=device),
        cols=axis_taps(b[:, 0], b[:, 2], image.width, params.out_w, antialias=params.antialias,
                       padding_mode=params.padding_mode, device=device),
        scale=scale,
        shift=shift,
    )


def normalisation(mean: Sequence[float], std: Sequence[float], uint8_input: bool) -> tuple[list[float], list[float]]:
    """The per-channel ``(scale, shift)`` of ``out = filtered · scale + shift``, rounded as the C++ kernel rounds
    them (float32 ``(1/255)/std`` and ``-mean/std``), so every backend normalises identically."""
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)
    in_scale = torch.tensor(1.0 / 255.0 if uint8_input else 1.0, dtype=torch.float32)
    return (in_scale / std_t).tolist(), (-mean_t / std_t).tolist()
