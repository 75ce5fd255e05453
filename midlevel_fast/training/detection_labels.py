"""Detection labels: which proposals teach a detection scorer which class (R-CNN, Girshick et al. 2014; Fast
R-CNN, Girshick 2015).

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel ``i`` covers ``[i, i+1)``), of
positive area; IoU is :func:`midlevel_fast.scoring.detections.pairwise_iou` in float64.

Each proposal is matched to its *best* object: the object of highest IoU with it, difficult or not, the lowest
object index at equal IoU (as the VOC devkit matches a detection to its max-IoU object). With ``m`` that IoU:

* ``m >= positive_iou`` and the object is not difficult → a positive: ``label = class + 1``, ``matched`` = the
  object's index;
* ``m >= positive_iou`` and the object is difficult → ignored (``IGNORED = -1``): difficult objects neither teach
  nor penalise, as VOC's evaluation neither rewards nor punishes detecting them;
* ``negative_iou <= m < positive_iou`` → ignored: too close to an object to be background, too loose to be it;
* ``bg_low <= m < negative_iou`` → background (``BACKGROUND = 0``);
* ``m < bg_low`` → ignored.

``matched`` is ``-1`` for every proposal that is not a positive. The two papers' rules are the same rule with a
different background interval, so this is one function: R-CNN's is the default (``negative_iou=0.3``,
``bg_low=0``: background is ``[0, 0.3)``); Fast R-CNN's is ``negative_iou=0.5, bg_low=0.1`` (background is
``[0.1, 0.5)``, nothing ignored between background and positive, proposals far from every object ignored). With no
objects every proposal's best IoU is 0: background under R-CNN's rule, ignored when ``bg_low > 0`` (as a proposal
far from every object is).

The thresholds are compared with the float64 IoU ``inter / union``: for coordinates on a binary grid (whole, half
or quarter pixels) ``inter`` and ``union`` are exact and the quotient is correctly rounded, so an IoU exactly on a
threshold written as a decimal (``0.3``) compares as the rational does, and two objects of exactly equal IoU tie,
as in the exact rational oracle of the tests (``tests/oracle/detection_labels.py``).
"""
from __future__ import annotations

import torch

from midlevel_fast.scoring.detections import pairwise_iou
from midlevel_fast.training.labels import checked_boxes

IGNORED: int = -1
BACKGROUND: int = 0
POSITIVE_IOU = 0.5
NEGATIVE_IOU = 0.3


def _objects(gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
             gt_difficult: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checked objects: boxes float64 ``(G, 4)``, classes int64 ``(G,)``, difficult bool ``(G,)``."""
    b = checked_boxes("gt_boxes", gt_boxes)
    cls = torch.as_tensor(gt_labels).to(device="cpu").reshape(-1)
    if len(cls) and (cls.dtype.is_floating_point or cls.dtype == torch.bool):
        raise ValueError(f"gt_labels must be integer class indices, got {cls.dtype}")
    if len(cls) != len(b) or (len(cls) and cls.min() < 0):
        raise ValueError(f"gt_labels must be {len(b)} class indices >= 0 (one per box), got {cls.tolist()}")
    return b, cls.long(), _difficult(gt_difficult, len(b))


def _difficult(gt_difficult: torch.Tensor, count: int) -> torch.Tensor:
    diff = torch.as_tensor(gt_difficult).to(device="cpu").reshape(-1)
    if diff.dtype != torch.bool or len(diff) != count:
        raise ValueError(f"gt_difficult must be bool (G,) = ({count},), got {diff.dtype} {tuple(diff.shape)}")
    return diff


def detection_labels(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_difficult: torch.Tensor,
    *,
    positive_iou: float = POSITIVE_IOU,
    negative_iou: float = NEGATIVE_IOU,
    bg_low: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label each proposal by the rule of the module docstring: ``(labels, matched)``, both int64 ``(N,)``;
    ``labels`` is ``class + 1`` (a positive), ``BACKGROUND = 0`` or ``IGNORED = -1``; ``matched`` the positive's
    object index, else ``-1``.

    ``proposals (N, 4)``, ``gt_boxes (G, 4)``: positive-area boxes (``ValueError`` otherwise); ``gt_labels (G,)``
    integer class indices ``>= 0``; ``gt_difficult (G,)`` bool. Needs ``0 <= bg_low <= negative_iou <=
    positive_iou <= 1`` and ``positive_iou > 0``.
    """
    if not (0 <= bg_low <= negative_iou <= positive_iou <= 1 and positive_iou > 0):
        raise ValueError("need 0 <= bg_low <= negative_iou <= positive_iou <= 1 and positive_iou > 0, got "
                         f"bg_low={bg_low}, negative_iou={negative_iou}, positive_iou={positive_iou}")
    p = checked_boxes("proposals", proposals)
    b, cls, diff = _objects(gt_boxes, gt_labels, gt_difficult)
    labels = torch.full((len(p),), IGNORED, dtype=torch.int64)
    matched = torch.full((len(p),), -1, dtype=torch.int64)
    if len(b):
        # torch.max returns the first maximal index: the lowest object index wins a tie in IoU.
        best, obj = pairwise_iou(p, b).max(dim=1)
    else:
        best, obj = torch.zeros(len(p), dtype=torch.float64), torch.zeros(len(p), dtype=torch.int64)
    labels[(best >= bg_low) & (best < negative_iou)] = BACKGROUND
    if len(b):
        positive = (best >= positive_iou) & ~diff[obj]
        labels[positive] = cls[obj[positive]] + 1
        matched[positive] = obj[positive]
    return labels, matched


def with_ground_truth(proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_difficult: torch.Tensor) -> torch.Tensor:
    """The proposals followed by the boxes of the non-difficult objects, float64 ``(N + G', 4)``: R-CNN trains on
    the ground-truth boxes as positives too (they are the tightest examples there are). Label the result with
    :func:`detection_labels`: each appended box has IoU 1 with its object, so it is a positive of that object
    (or of an identical box of lower index). Difficult objects are not appended, as they teach nothing."""
    p = checked_boxes("proposals", proposals)
    b = checked_boxes("gt_boxes", gt_boxes)
    return torch.cat([p, b[~_difficult(gt_difficult, len(b))]])
