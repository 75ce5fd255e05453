"""Oracle of ROI align (``midlevel_fast.features.roi_align``): box by box, bin by bin, sample by sample, each
sample interpolated from its four cells in float64 plain Python, as the Mask R-CNN / torchvision kernel reads
them. Shares no code with the package."""
from __future__ import annotations

import math

import torch


def bilinear(plane: list[list[float]], y: float, x: float) -> float:
    """The value at ``(y, x)`` (cell ``(r, k)``'s centre at ``(r, k)``) of a ``H × W`` plane: zero beyond
    ``[-1, H] × [-1, W]``, the border cell's value between -1 and 0, the last cell's past the last centre."""
    height, width = len(plane), len(plane[0])
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * plane[y0][x0] + (1 - ly) * lx * plane[y0][x1]
            + ly * (1 - lx) * plane[y1][x0] + ly * lx * plane[y1][x1])


def roi_align_reference(maps: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor,
                        output_size: tuple[int, int], sampling_ratio: int, aligned: bool = True) -> torch.Tensor:
    """``(N, C, h, w)`` float64: each bin of each box the mean of its ``gy × gx`` samples (``sampling_ratio``, or
    ``ceil`` of the bin's size for 0), the box shifted by half a cell when ``aligned`` and at least one cell
    wide when not."""
    h, w = output_size
    n, channels = boxes.shape[0], maps.shape[1]
    out = torch.zeros(n, channels, h, w, dtype=torch.float64)
    grids = maps.double().tolist()
    for m in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[m])
        shift = 0.5 if aligned else 0.0
        x0, y0, x1, y1 = x0 - shift, y0 - shift, x1 - shift, y1 - shift
        roi_w, roi_h = x1 - x0, y1 - y0
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / h, roi_w / w
        gy = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_h)
        gx = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_w)
        count = max(gy * gx, 1)
        for c in range(channels):
            plane = grids[int(batch_index[m])][c]
            for i in range(h):
                for j in range(w):
                    total = 0.0
                    for sy in range(gy):
                        y = y0 + i * bin_h + (sy + 0.5) * bin_h / gy
                        for sx in range(gx):
                            total += bilinear(plane, y, x0 + j * bin_w + (sx + 0.5) * bin_w / gx)
                    out[m, c, i, j] = total / count
    return out
