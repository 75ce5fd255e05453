"""Dense proposals: candidate boxes for a detector, built on the dense mode's window lattice
(:mod:`midlevel_fast.features.dense`) so that each box can be ROI-pooled from the trunk maps that mode computes.

Rule, for a ``width``×``height`` image and a :class:`ProposalConfig`:

* the squares: per scale ``λ`` the windows of :func:`~midlevel_fast.features.dense.dense_plan`'s resized plane
  (side ``min(W, H)/λ`` in the image), but stepping ``step_divisor`` times finer than the dense mode's window
  step; ``step_divisor = 1`` gives exactly the windows :func:`~midlevel_fast.features.dense.dense_windows` scores;
* the rectangles: at every square's centre, for each ratio ``r`` of ``aspect_ratios``, the two boxes of the
  square's area with width/height ``r`` and ``1/r`` (``side_x·√r × side_y/√r`` and its transpose: SPPnet/Fast
  R-CNN's pyramid windows);
* every box clipped to the image (a box's centre lies inside it, so every clipped box keeps a positive area),
  then duplicates dropped: boxes equal coordinate for coordinate after clipping (float32), the first kept.

Order: scale-major (the scales in config order); within a scale the squares, then for each ratio ``r`` in config
order the ``r`` boxes and the ``1/r`` boxes; within each of these row-major over the lattice. Boxes are
``(x0, y0, x1, y1)`` float32 in continuous image pixels (pixel ``i`` covers ``[i, i+1)``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.features.dense import dense_plan, window_boxes
from midlevel_fast.features.grid import PAPER_SCALES
from midlevel_fast.features.limits import check_image_size


@dataclass(frozen=True)
class ProposalConfig:
    """A proposal set (module docstring): ``scales`` (``λ``, as the grid's: window side ``min(W, H)/λ``),
    ``aspect_ratios`` (each ``r`` adds the ``r`` and ``1/r`` rectangles; the square is always in) and
    ``step_divisor`` (the lattice is that many times finer than the dense mode's window step).

    Stored as tuples of floats. Raises ``ValueError`` for empty ``scales``, a scale or ratio that is not a finite
    number above 0, or a ``step_divisor`` that is not an integer >= 1."""

    scales: tuple[float, ...] = PAPER_SCALES
    aspect_ratios: tuple[float, ...] = ()
    step_divisor: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", _positive_floats("scales", self.scales))
        object.__setattr__(self, "aspect_ratios", _positive_floats("aspect_ratios", self.aspect_ratios))
        if not self.scales:
            raise ValueError("scales is empty: give at least one scale, e.g. PAPER_SCALES")
        if isinstance(self.step_divisor, bool) or not isinstance(self.step_divisor, (int, np.integer)) \
                or self.step_divisor < 1:
            raise ValueError(f"step_divisor must be an integer >= 1 (1: the dense mode's lattice), "
                             f"got {self.step_divisor!r}")
        object.__setattr__(self, "step_divisor", int(self.step_divisor))


def _positive_floats(name: str, values: Iterable[float]) -> tuple[float, ...]:
    """``values`` as a tuple of floats, or ``ValueError`` naming ``name`` when it is not a sequence of numbers or
    one is not a finite number > 0."""
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError(name)
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    bad = [v for v in out if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"{name} must all be finite and > 0, got {bad[0]!r} in {out}")
    return out


# Three more scales below the paper's smallest window (min side / 4): windows down to min side / 6.4 (59 px on a
# 375-pixel side), for small objects; each costs a trunk pass over a plane up to 2.6 times the largest of the
# paper's scales.
SMALL_OBJECT_SCALES: tuple[float, ...] = PAPER_SCALES + (4.8, 5.6, 6.4)

# The best set of docs/boxes.md's recall table (91.9 % of VOC val's objects at IoU 0.5, 84.2 % at 0.7).
DEFAULT_PROPOSALS = ProposalConfig(scales=SMALL_OBJECT_SCALES, aspect_ratios=(2.0, 3.0), step_divisor=2)

# Named sets: "square" is exactly the dense mode's windows, "default" is DEFAULT_PROPOSALS.
PROPOSAL_PRESETS: dict[str, ProposalConfig] = {"square": ProposalConfig(), "default": DEFAULT_PROPOSALS}


def proposal_config(config: ProposalConfig | str) -> ProposalConfig:
    """``config`` itself, or the preset of :data:`PROPOSAL_PRESETS` it names (``ValueError`` for another name)."""
    if isinstance(config, ProposalConfig):
        return config
    if config not in PROPOSAL_PRESETS:
        raise ValueError(f"config must be a ProposalConfig or one of {sorted(PROPOSAL_PRESETS)}, got {config!r}")
    return PROPOSAL_PRESETS[config]


def lattice_squares(backbone: BackboneLike, width: int, height: int, config: ProposalConfig) -> list[torch.Tensor]:
    """The squares of every scale (module docstring), one float32 ``(n, 4)`` tensor per scale, unclipped. Raises
    the dense mode's ``ValueError`` for a too elongated image, and one for a ``step_divisor`` that does not divide
    the window step in resized pixels (the lattice stays on whole pixels of the plane)."""
    plan = dense_plan(backbone, height, width, config.scales)
    if plan.step_px % config.step_divisor:
        raise ValueError(f"step_divisor {config.step_divisor} does not divide {backbone.name}'s window step of "
                         f"{plan.step_px} px; use a divisor of {plan.step_px}")
    step = plan.step_px // config.step_divisor
    out = []
    for hr, wr in plan.planes:
        rows, cols = (hr - plan.input_size) // step + 1, (wr - plan.input_size) // step + 1
        out.append(window_boxes(rows, cols, step, plan.input_size, backbone.grid_offset(hr, wr), height / hr,
                                width / wr))
    return out


def with_aspect_ratios(squares: torch.Tensor, aspect_ratios: tuple[float, ...]) -> torch.Tensor:
    """``squares (n, 4)`` followed, for each ``r`` of ``aspect_ratios``, by the ``n`` boxes of width/height ``r``
    and then the ``n`` of ``1/r``, each centred on its square with its area; float64, unclipped."""
    sq = squares.double()
    cx, cy = (sq[:, 0] + sq[:, 2]) / 2, (sq[:, 1] + sq[:, 3]) / 2
    side_x, side_y = sq[:, 2] - sq[:, 0], sq[:, 3] - sq[:, 1]
    parts = [sq]
    for r in aspect_ratios:
        for a in (r, 1 / r):
            w, h = side_x * math.sqrt(a), side_y / math.sqrt(a)
            parts.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1))
    return torch.cat(parts)


def first_unique(boxes: torch.Tensor) -> torch.Tensor:
    """``boxes (N, 4)`` float32 without the rows equal to an earlier row (exact equality), in their order."""
    # Each row's 16 bytes as one key: np.unique sorts those ten times faster than torch.unique(dim=0) sorts rows.
    # Adding 0 turns -0.0 into 0.0, so that equal bytes are equal floats (no NaN can come out of clipping).
    rows = np.ascontiguousarray(boxes.numpy() + np.float32(0))
    _, first = np.unique(rows.view(np.dtype((np.void, rows.itemsize * 4))).ravel(), return_index=True)
    return torch.from_numpy(rows[np.sort(first)])


def dense_proposals(width: int, height: int, backbone: BackboneLike,
                    config: ProposalConfig | str = DEFAULT_PROPOSALS) -> torch.Tensor:
    """The proposals ``(N, 4)`` float32 of a ``width``×``height`` image for ``backbone``'s dense lattice under
    ``config`` (a :class:`ProposalConfig` or a name of :data:`PROPOSAL_PRESETS`): clipped to the image, without
    duplicates, in the order of the module docstring. ``"square"`` gives the boxes of
    :func:`~midlevel_fast.features.dense.dense_windows` (clipped: they overshoot the image by float32 rounding
    at most).

    Raises ``ValueError`` as the dense mode does for an image too small for the smallest window
    (:func:`~midlevel_fast.features.limits.check_image_size`) or too elongated for a dense plane
    (:func:`~midlevel_fast.features.dense.check_dense_planes`), and for a bad ``config``."""
    config = proposal_config(config)
    check_image_size(width, height, config.scales, backbone)
    parts = []
    for squares in lattice_squares(backbone, width, height, config):
        boxes = with_aspect_ratios(squares, config.aspect_ratios)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        parts.append(boxes.float())
    return first_unique(torch.cat(parts))
