"""Oracle of :mod:`midlevel_fast.metrics.proposal_recall`: each object's best overlap found box by box with exact
rational IoU, then the counts. Shares no code with the package."""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

Box = Sequence[float]


def iou_fraction(a: Box, b: Box) -> Fraction:
    """IoU of two boxes ``(x0, y0, x1, y1)`` as a fraction; a box with ``x1 < x0`` or ``y1 < y0`` has area 0, and
    an empty union gives 0."""
    a = [Fraction(v) for v in a]
    b = [Fraction(v) for v in b]
    iw = max(Fraction(0), min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(Fraction(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(Fraction(0), a[2] - a[0]) * max(Fraction(0), a[3] - a[1])
    area_b = max(Fraction(0), b[2] - b[0]) * max(Fraction(0), b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else Fraction(0)


def proposal_recall_reference(proposals: Sequence[Sequence[Box]], gt_boxes: Sequence[Sequence[Box]],
                              difficult: Sequence[Sequence[bool]], thresholds: Sequence[float]
                              ) -> tuple[list[Fraction], Fraction, Fraction, int]:
    """``(recall per threshold, MABO, boxes per image, objects counted)``: for every object not marked difficult,
    the largest IoU over its image's proposals (0 without any); a threshold is read as the decimal it is written
    as (0.7 is 7/10). ``objects`` is 0 and the rest is empty/0 when no object is counted."""
    best: list[Fraction] = []
    for cands, objects, flags in zip(proposals, gt_boxes, difficult):
        for box, hard in zip(objects, flags):
            if hard:
                continue
            top = Fraction(0)
            for cand in cands:
                top = max(top, iou_fraction(box, cand))
            best.append(top)
    boxes_per_image = Fraction(sum(len(c) for c in proposals), len(proposals)) if proposals else Fraction(0)
    if not best:
        return [], Fraction(0), boxes_per_image, 0
    recall = [Fraction(sum(1 for b in best if b >= Fraction(str(t))), len(best)) for t in thresholds]
    return recall, sum(best, Fraction(0)) / len(best), boxes_per_image, len(best)
