"""Oracle of :func:`midlevel_fast.crop_resize`: dense float64 resize matrices built tap by tap in plain Python,
one box at a time. Shares no code with the package."""
from __future__ import annotations

import math
from typing import Sequence

import torch


def pad_index(i: int, n: int, padding_mode: str) -> int | None:
    """Source index read for tap ``i`` on an axis of ``n`` pixels; ``None`` means "reads zero"."""
    if 0 <= i < n:
        return i
    if padding_mode == "edge":
        return min(max(i, 0), n - 1)
    if padding_mode == "reflect":
        if n == 1:
            return 0
        period = 2 * (n - 1)
        m = i % period
        return m if m < n else period - m
    return None


def resize_matrix(b0: float, b1: float, n_in: int, n_out: int, antialias: bool, padding_mode: str) -> torch.Tensor:
    """Dense ``(n_out, n_in)`` float64 matrix M with ``output = M @ input`` along one axis (Pillow's triangle
    filter, widened by the shrink factor when antialiasing, taps outside the image mapped by ``padding_mode``)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    scale = (b1 - b0) / n_out
    support = max(scale, 1.0) if antialias else 1.0
    for j in range(n_out):
        center = b0 + (j + 0.5) * scale
        taps = []
        for x in range(math.floor(center - support) - 1, math.ceil(center + support) + 2):
            w = max(0.0, 1.0 - abs(x + 0.5 - center) / support)
            if w > 0:
                taps.append((x, w))
        total = sum(w for _, w in taps)
        for x, w in taps:
            src = pad_index(x, n_in, padding_mode)
            if src is not None:
                m[j, src] += w / total
    return m


def crop_resize_reference(
    image: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    antialias: bool = True,
    padding_mode: str = "edge",
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-box float64 ``Wy @ plane @ Wx.T`` with the conventions of :func:`midlevel_fast.crop_resize`.

    ``image``: validated uint8 HWC or float32 CHW tensor; ``boxes``: float ``(N, 4)``; returns ``(N, C, h, w)``.
    """
    if image.dtype == torch.uint8:
        planes = (image if image.ndim == 3 else image[:, :, None]).permute(2, 0, 1).to(torch.float64) / 255.0
    else:
        planes = image.to(torch.float64)
    c, h, w = planes.shape
    planes = planes.cpu()
    mean_t = torch.tensor(mean, dtype=torch.float64).view(c, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(c, 1, 1)
    out = torch.empty((boxes.shape[0], c, size[0], size[1]), dtype=torch.float64)
    for n, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        my = resize_matrix(y0, y1, h, size[0], antialias, padding_mode)
        mx = resize_matrix(x0, x1, w, size[1], antialias, padding_mode)
        out[n] = (my @ planes @ mx.T - mean_t) / std_t
    return out.to(out_dtype)
