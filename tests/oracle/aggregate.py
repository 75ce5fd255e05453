"""Oracle of :func:`midlevel_fast.output_maps` and :func:`midlevel_fast.power_mean`: a per-box raster loop and
the formula written out per class. Shares no code with the package."""
from __future__ import annotations

import torch


def output_maps_reference(boxes: torch.Tensor, probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-box raster loop for :func:`midlevel_fast.ops.aggregate.output_maps`: every pixel whose centre lies in the
    box gets the box's probabilities added and its count incremented."""
    total = torch.zeros(probs.shape[1], height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    for (x0, y0, x1, y1), p in zip(boxes.double().tolist(), probs.double()):
        inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
        total += p[:, None, None] * inside
        count += inside
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total)).float()


def power_mean_reference(probs: torch.Tensor, k: float) -> torch.Tensor:
    """``1/M Σ_i p_i^k`` per class, summed patch by patch in Python floats (``probs (M, C)``, returns float64)."""
    rows = probs.double().tolist()
    return torch.tensor([sum(row[c] ** k for row in rows) / len(rows) for c in range(probs.shape[1])],
                        dtype=torch.float64)
