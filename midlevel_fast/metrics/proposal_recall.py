"""Recall of candidate boxes: how many objects a detector built on them could find at all (geometry only, no
scores).

Rule: for each counted object, its best IoU with any proposal of its image (0 when the image has none). The recall
at a threshold ``t`` is the fraction of counted objects whose best IoU is ``>= t``; MABO (mean average best
overlap) is the mean best IoU over the counted objects of all images pooled (not a mean over classes: the boxes
carry no class). Difficult objects are not counted at all (neither found nor missed), as the VOC devkit leaves them
out of detection AP. IoU by :func:`midlevel_fast.scoring.detections.pairwise_iou` in float64. Boxes are
``(x0, y0, x1, y1)`` in continuous image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from midlevel_fast.scoring.detections import pairwise_iou


@dataclass(frozen=True)
class ProposalRecall:
    """``recall[i]``: the fraction of counted objects with a proposal at IoU ``>= thresholds[i]``; ``mabo``: their
    mean best IoU; ``boxes_per_image``: the mean number of proposals over all images (those without counted
    objects too); ``objects``: the number of counted (non-difficult) objects."""

    thresholds: tuple[float, ...]
    recall: tuple[float, ...]
    mabo: float
    boxes_per_image: float
    objects: int


def _boxes(value: torch.Tensor | np.ndarray, name: str, image: int) -> torch.Tensor:
    """``value`` as float64 ``(n, 4)``, or ``ValueError`` naming ``name[image]`` and its shape."""
    boxes = torch.as_tensor(value, dtype=torch.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}[{image}] must be (n, 4) boxes (x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    return boxes


def _thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """``thresholds`` as floats, or ``ValueError`` when there is none or one is not an IoU in [0, 1]."""
    out = tuple(float(t) for t in thresholds)
    if not out or not all(0 <= t <= 1 for t in out):  # NaN fails the comparison too
        raise ValueError(f"thresholds must be one or more IoUs in [0, 1], got {thresholds!r}")
    return out


def best_overlaps(proposals: Sequence[torch.Tensor | np.ndarray], gt_boxes: Sequence[torch.Tensor | np.ndarray],
                  difficult: Sequence[torch.Tensor | np.ndarray]) -> torch.Tensor:
    """The best IoU float64 ``(M,)`` of every counted object, image by image, objects in their order; inputs as
    :func:`proposal_recall`'s."""
    if not len(proposals) == len(gt_boxes) == len(difficult):
        raise ValueError(f"proposals, gt_boxes and difficult must hold one entry per image, got {len(proposals)}, "
                         f"{len(gt_boxes)} and {len(difficult)}")
    best = []
    for i, (cand, gt, hard) in enumerate(zip(proposals, gt_boxes, difficult)):
        cand, gt = _boxes(cand, "proposals", i), _boxes(gt, "gt_boxes", i)
        hard = torch.as_tensor(hard, dtype=torch.bool).reshape(-1)
        if len(hard) != len(gt):
            raise ValueError(f"difficult[{i}] has {len(hard)} flags for {len(gt)} boxes of gt_boxes[{i}]")
        gt = gt[~hard]
        if len(cand):
            best.append(pairwise_iou(gt, cand).max(dim=1).values)
        else:
            best.append(torch.zeros(len(gt), dtype=torch.float64))
    return torch.cat(best) if best else torch.zeros(0, dtype=torch.float64)


def proposal_recall(proposals: Sequence[torch.Tensor | np.ndarray], gt_boxes: Sequence[torch.Tensor | np.ndarray],
                    difficult: Sequence[torch.Tensor | np.ndarray],
                    thresholds: Sequence[float] = (0.5, 0.7)) -> ProposalRecall:
    """Recall at each of ``thresholds`` and MABO (module docstring) of ``proposals[i] (n_i, 4)`` against the
    objects ``gt_boxes[i] (m_i, 4)`` of the same images, ``difficult[i] (m_i,)`` bool marking the objects not
    counted.

    Raises ``ValueError`` when the three sequences differ in length, a box array is not ``(n, 4)``, a
    ``difficult`` entry does not match its boxes, a threshold is not in [0, 1], or no object is counted (a recall
    over no objects means nothing)."""
    ts = _thresholds(thresholds)
    best = best_overlaps(proposals, gt_boxes, difficult)
    if not len(best):
        raise ValueError("gt_boxes holds no non-difficult object: there is no recall to measure")
    counts = [len(p) for p in proposals]
    return ProposalRecall(thresholds=ts, recall=tuple(float((best >= t).double().mean()) for t in ts),
                          mabo=float(best.mean()), boxes_per_image=float(np.mean(counts)), objects=len(best))

