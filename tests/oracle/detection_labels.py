"""Oracle of :func:`midlevel_fast.training.detection_labels.detection_labels`: proposal by proposal, object by
object, in exact rational arithmetic, the thresholds read as the decimals they are written as (0.3 is 3/10).
Shares no code with the package."""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

Box = Sequence[float]


def _iou(a: Box, b: Box) -> Fraction:
    a = [Fraction(v) for v in a]
    b = [Fraction(v) for v in b]
    inter = max(Fraction(0), min(a[2], b[2]) - max(a[0], b[0])) * max(Fraction(0), min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detection_labels_reference(proposals: Sequence[Box], gt_boxes: Sequence[Box], gt_labels: Sequence[int],
                               gt_difficult: Sequence[bool], positive_iou: float = 0.5, negative_iou: float = 0.3,
                               bg_low: float = 0.0) -> tuple[list[int], list[int]]:
    """``(labels, matched)``: each proposal's best object is the first of highest exact IoU (difficult or not;
    none: IoU 0); at IoU >= ``positive_iou`` it is a positive of that object (``class + 1``) unless the object is
    difficult (ignored, -1); in ``[negative_iou, positive_iou)`` ignored; in ``[bg_low, negative_iou)``
    background (0); below ``bg_low`` ignored. ``matched`` is the positive's object, else -1."""
    pos, neg, low = Fraction(str(positive_iou)), Fraction(str(negative_iou)), Fraction(str(bg_low))
    labels, matched = [], []
    for p in proposals:
        best, best_j = Fraction(0), -1
        for j, g in enumerate(gt_boxes):
            ov = _iou(p, g)
            if best_j < 0 or ov > best:  # strictly greater: the first object keeps a tie
                best, best_j = ov, j
        if best >= pos and not gt_difficult[best_j]:
            labels.append(int(gt_labels[best_j]) + 1)
            matched.append(best_j)
        else:
            labels.append(0 if low <= best < neg else -1)
            matched.append(-1)
    return labels, matched
