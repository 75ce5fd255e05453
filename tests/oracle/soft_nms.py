"""Oracle of :mod:`midlevel_fast.scoring.soft_nms`: the paper's Algorithm 1 (Bodla et al., ICCV 2017) as a plain
loop over Python floats (float64), each operation in the order the package does it, so that the two agree to
the last bit wherever ``exp`` is not involved. Shares no code with the package."""
from __future__ import annotations

import math
from typing import Sequence

Box = Sequence[float]


def iou_float(a: Box, b: Box) -> float:
    """IoU in float64: ``inter / (area_a + area_b - inter)``, 0 for an empty union."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def soft_nms_reference(boxes: Sequence[Box], scores: Sequence[float], method: str, iou: float = 0.3,
                       sigma: float = 0.5, score_threshold: float = 0.001,
                       labels: Sequence[int] | None = None) -> tuple[list[int], list[float]]:
    """``(keep, new_scores)``: B = the boxes of score >= ``score_threshold``; while B is not empty, take the
    box M of highest current score (the lowest index among equal ones), keep it, remove it from B, multiply the
    score of every box of B with M's label by f(IoU(M, b)) and remove those now below ``score_threshold``.
    f: linear ``1 - IoU`` if IoU > ``iou`` else 1; gaussian ``exp(-IoU² / sigma)``; hard 0 if IoU > ``iou``
    else 1. The kept boxes in the order they were kept (all labels in one loop)."""
    labels = [0] * len(boxes) if labels is None else list(labels)
    s = [float(v) for v in scores]
    remaining = [i for i in range(len(boxes)) if s[i] >= score_threshold]
    keep: list[int] = []
    while remaining:
        m = remaining[0]
        for i in remaining:
            if s[i] > s[m]:
                m = i
        keep.append(m)
        remaining.remove(m)
        for i in remaining:
            if labels[i] != labels[m]:
                continue
            ov = iou_float(boxes[m], boxes[i])
            if method == "linear":
                weight = 1 - ov if ov > iou else 1.0
            elif method == "gaussian":
                weight = math.exp(-(ov * ov) / sigma)
            else:
                weight = 0.0 if ov > iou else 1.0
            s[i] = s[i] * weight
        remaining = [i for i in remaining if s[i] >= score_threshold]
    return keep, [s[i] for i in keep]
