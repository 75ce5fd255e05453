"""Oracle of :func:`midlevel_fast.training.consistency.match_windows`: window by window, crop by crop, exact IoU.
Shares no code with the package."""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import torch


def match_windows_reference(
    dense_boxes: Sequence[Sequence[float]] | torch.Tensor,
    dense_scale: Sequence[int] | torch.Tensor,
    crop_boxes: Sequence[Sequence[float]] | torch.Tensor,
    crop_scale: Sequence[int] | torch.Tensor,
) -> torch.Tensor:
    """Window-by-window, crop-by-crop loop for :func:`midlevel_fast.training.consistency.match_windows`, with the IoU in
    exact rational arithmetic: the first crop of the window's scale with the largest IoU, or -1."""
    def exact(boxes):
        return [[Fraction(float(v)) for v in box] for box in torch.as_tensor(boxes, dtype=torch.float64).tolist()]

    crops = list(zip(exact(crop_boxes), torch.as_tensor(crop_scale).reshape(-1).tolist()))
    matches = []
    for (x0, y0, x1, y1), scale in zip(exact(dense_boxes), torch.as_tensor(dense_scale).reshape(-1).tolist()):
        best, best_iou = -1, Fraction(-1)
        for j, ((u0, v0, u1, v1), crop_scale_j) in enumerate(crops):
            if crop_scale_j != scale:
                continue
            inter = max(Fraction(0), min(x1, u1) - max(x0, u0)) * max(Fraction(0), min(y1, v1) - max(y0, v0))
            iou = inter / ((x1 - x0) * (y1 - y0) + (u1 - u0) * (v1 - v0) - inter)
            if iou > best_iou:
                best, best_iou = j, iou
        matches.append(best)
    return torch.tensor(matches, dtype=torch.int64)
