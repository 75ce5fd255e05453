"""The paper's multi-scale patch grid (Oquab et al., CVPR 2014, section 3).

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates; pixel ``i`` covers ``[i, i+1)``.

Rule, for each scale ``λ`` in order:

* the square side is ``s = min(width, height) / λ``;
* along an axis of length ``L`` the patch takes ``n = ceil((L - s) / (step·s)) + 1`` positions
  (``n = 1`` when ``s = L``), evenly spaced from edge to edge: ``x0_k = k·(L - s)/(n - 1)``. The first patch
  touches the left/top edge, the last one the right/bottom edge, and the step ``(L - s)/(n - 1)`` is at most
  ``step·s``, so neighbours overlap by at least ``1 - step`` of their side (≥ 50 % for ``step ≤ 1/2``).

Boxes come out scale-major, then row-major (y, then x). With the defaults a 500×375 image gets 512 patches
(the paper says "around 500").
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

PAPER_SCALES: tuple[float, ...] = (1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0)
PAPER_STEP: float = 1.0 / 3.0

# Guards the ceil against float noise: (L - s)/(step·s) that is an integer in exact arithmetic must not
# round up to the next one.
_EPS = 1e-9


class Grid(NamedTuple):
    """Patches of one image: ``boxes`` float32 ``(N, 4)`` as ``(x0, y0, x1, y1)``; ``scale_index`` int64 ``(N,)``
    indexing the ``scales`` they were made with."""

    boxes: torch.Tensor
    scale_index: torch.Tensor


def _positive_finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return v


def axis_positions(length: float, side: float, step: float) -> list[float]:
    """Start coordinates of patches of ``side`` along an axis of ``length`` (``side <= length``)."""
    span = length - side
    if span <= _EPS * length:
        return [0.0]
    n = math.ceil(span / (step * side) - _EPS) + 1
    return [k * span / (n - 1) for k in range(n)]


def grid(
    width: float,
    height: float,
    scales: Sequence[float] = PAPER_SCALES,
    step: float = PAPER_STEP,
) -> Grid:
    """Multi-scale square patches covering a ``width``×``height`` image; see the module docstring for the rule.

    ``scales`` are the λ values (each ≥ 1, so a patch fits in the image); ``step`` is the largest step between
    neighbouring patches as a fraction of their side, in ``(0, 1]``. Raises ``ValueError`` on non-positive or
    non-finite sizes and on bad scales or step.
    """
    w = _positive_finite("width", width)
    h = _positive_finite("height", height)
    st = _positive_finite("step", step)
    if st > 1:
        raise ValueError(f"step must be in (0, 1] (a fraction of the patch side), got {step!r}")
    if len(scales) == 0:
        raise ValueError("scales must not be empty")
    boxes: list[tuple[float, float, float, float]] = []
    index: list[int] = []
    for i, lam in enumerate(scales):
        lam_v = _positive_finite(f"scales[{i}]", lam)
        if lam_v < 1:
            raise ValueError(f"scales[{i}] = {lam!r}: λ must be >= 1 so that the patch fits in the image")
        side = min(w, h) / lam_v
        for y0 in axis_positions(h, side, st):
            for x0 in axis_positions(w, side, st):
                boxes.append((x0, y0, x0 + side, y0 + side))
                index.append(i)
    return Grid(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(index, dtype=torch.int64))
