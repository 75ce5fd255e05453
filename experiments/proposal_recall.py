"""Recall of candidate-box sets on VOC val: how many objects a detector built on them could find at all.

A detector can find only the objects some candidate box covers. This measures the geometry only (no
model, no scores): for each non-difficult val object, the best IoU with any box of the set, and so the recall at
IoU 0.5 and 0.7 and the mean best overlap (MABO), with the mean number of boxes per image. Sets, all built on
the dense mode's window lattice of EfficientNet-Lite0 at the paper's scales:

* ``square``: the dense windows ``score_image`` scores today (the lattice of ``dense_plan``, boxes as
  ``plane_windows`` places them; checked against ``dense_windows`` on the first image);
* ``+ 1:2, 2:1``: at every square window's centre also the two rectangles of the same area with aspect ratio 2
  (``s·√2 × s/√2`` and its transpose), clipped to the image (SPPnet/Fast R-CNN's pyramid windows, ROI-pooled
  from the same trunk maps);
* ``+ half step``: the three shapes on a lattice of half the step (the centres between the windows);
* ``+ 1:3, 3:1``: aspect ratio 3 too (long objects: bottles, people standing, trains);
* ``+ scales 4.8, 5.6, 6.4``: all of that at three more scales with smaller windows (small objects).

Run: ``python -m experiments.proposal_recall [--voc ROOT] [--split val]`` (a few seconds; no cache, no model
weights are read beyond the backbone's geometry).
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from midlevel_fast.backbones import get_backbone
from midlevel_fast.features.dense import dense_plan, dense_windows, window_boxes
from midlevel_fast.scoring.detections import pairwise_iou
from midlevel_fast.features.grid import PAPER_SCALES
from midlevel_fast.datasets.voc import load_split, object_arrays
from tests.helpers import experiment_voc_root


def square_windows(backbone: torch.nn.Module, height: int, width: int, step_div: int = 1,
                   scales: tuple[float, ...] = PAPER_SCALES) -> torch.Tensor:
    """The dense windows of a ``width``×``height`` image in image coordinates (``(N, 4)``, ``(x0, y0, x1, y1)``),
    on a lattice ``step_div`` times finer than the dense mode's, at ``scales``."""
    plan = dense_plan(backbone, height, width, scales)
    out = []
    for hr, wr in plan.planes:
        step = plan.step_px / step_div
        rows = int((hr - plan.input_size) // step) + 1
        cols = int((wr - plan.input_size) // step) + 1
        oy, ox = backbone.grid_offset(hr, wr)
        out.append(window_boxes(rows, cols, step, plan.input_size, (oy, ox), height / hr, width / wr))
    return torch.cat(out)


def with_aspects(squares: torch.Tensor, ratios: list[float], height: int, width: int) -> torch.Tensor:
    """``squares`` and, at each one's centre, the boxes of the same area with width/height ``r`` and ``1/r`` for
    each ``r`` of ``ratios``, clipped to the image."""
    cx, cy = (squares[:, 0] + squares[:, 2]) / 2, (squares[:, 1] + squares[:, 3]) / 2
    side_x, side_y = squares[:, 2] - squares[:, 0], squares[:, 3] - squares[:, 1]
    parts = [squares]
    for r in ratios:
        for a in (r, 1 / r):
            w, h = side_x * math.sqrt(a), side_y / math.sqrt(a)
            parts.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1))
    boxes = torch.cat(parts)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


# Three more scales below the paper's smallest window (min side / 4): windows down to min side / 6.4 (59 px on a
# 375-pixel side), for small objects; each costs a trunk pass over a plane up to 2.6 times the largest today.
SMALL_SCALES = PAPER_SCALES + (4.8, 5.6, 6.4)

SETS = {
    "square (today's dense windows)": lambda bb, h, w: square_windows(bb, h, w),
    "+ 1:2, 2:1": lambda bb, h, w: with_aspects(square_windows(bb, h, w), [2.0], h, w),
    "+ half step": lambda bb, h, w: with_aspects(square_windows(bb, h, w, 2), [2.0], h, w),
    "+ 1:3, 3:1": lambda bb, h, w: with_aspects(square_windows(bb, h, w, 2), [2.0, 3.0], h, w),
    "+ scales 4.8, 5.6, 6.4": lambda bb, h, w: with_aspects(square_windows(bb, h, w, 2, SMALL_SCALES), [2.0, 3.0],
                                                            h, w),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", help="VOC2012 root (default: MIDLEVEL_FAST_VOC or ../shared/data)")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    images = load_split(experiment_voc_root(args.voc), args.split)
    backbone = get_backbone("efficientnet_lite0", pretrained=False)
    # The lattice above is the dense mode's: the same boxes, in the same order, as dense_windows on one image.
    first = images[0]
    real = dense_windows(backbone, np.zeros((first.height, first.width, 3), np.uint8), PAPER_SCALES).boxes
    assert torch.allclose(real, square_windows(backbone, first.height, first.width), atol=1e-3), "lattice differs"
    print(f"VOC2012 {args.split}: {len(images)} images, non-difficult objects only\n")
    print(f"{'set':32s} {'boxes/image':>11s} {'recall@0.5':>10s} {'recall@0.7':>10s} {'MABO':>6s}")
    for name, make in SETS.items():
        best, counts = [], []
        for img in images:
            boxes, _, difficult = object_arrays(img)
            gt = boxes[~difficult].float()
            cand = make(backbone, img.height, img.width)
            counts.append(len(cand))
            if len(gt):
                best.append(pairwise_iou(gt, cand).max(dim=1).values)
        b = torch.cat(best)
        print(f"{name:32s} {np.mean(counts):11.0f} {100 * (b >= 0.5).float().mean():9.1f}% "
              f"{100 * (b >= 0.7).float().mean():9.1f}% {b.mean():6.3f}")


if __name__ == "__main__":
    main()
