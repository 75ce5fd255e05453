"""The pure-torch aggregation (``backend="torch"``): the power mean in float64 and the output maps by prefix sums.
(Not named ``torch.py``: that submodule would shadow ``torch`` in the package ``__init__``.)
"""
from __future__ import annotations

import torch

from midlevel_fast.ops.aggregate.schema import covered_range


def power_mean_torch(probs: torch.Tensor, k: float) -> torch.Tensor:
    """``1/M Σ_i probs[i]^k`` per class of validated ``probs (M, C)``, in float64, returned in ``probs``' dtype."""
    return probs.double().pow(k).mean(dim=0).to(probs.dtype)


def coverage_sums(boxes: torch.Tensor, probs: torch.Tensor, height: int,
                  width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total (C, height, width), count (height, width))`` float64 on the CPU, in ``O(M·C + C·H·W)``: per pixel,
    the sum of the probabilities of the boxes covering it and their number. Every box adds its values at the
    corners of a difference image, whose 2-D prefix sum is the per-pixel total; a column of ones counts coverage.
    """
    b = boxes.double().cpu()
    x0, x1 = covered_range(b[:, 0], b[:, 2], width)
    y0, y1 = covered_range(b[:, 1], b[:, 3], height)
    c = probs.shape[1]
    values = torch.cat([probs.double().cpu(), torch.ones(len(b), 1, dtype=torch.float64)], dim=1)  # + coverage
    diff = torch.zeros(c + 1, (height + 1) * (width + 1), dtype=torch.float64)
    for ys, xs, sign in ((y0, x0, 1.0), (y0, x1, -1.0), (y1, x0, -1.0), (y1, x1, 1.0)):
        diff.index_add_(1, ys * (width + 1) + xs, values.t() * sign)
    total = diff.view(c + 1, height + 1, width + 1).cumsum(1).cumsum(2)[:, :height, :width]
    return total[:c], total[c]


def output_maps_torch(boxes: torch.Tensor, probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(C, height, width)`` float32 maps on the CPU: :func:`coverage_sums`' total over its count (0 where no box
    covers the pixel)."""
    total, count = coverage_sums(boxes, probs, height, width)
    return torch.where(count > 0.5, total / count.clamp(min=1.0), torch.zeros_like(total)).float()
