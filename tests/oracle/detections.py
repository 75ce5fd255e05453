"""Oracles of :mod:`midlevel_fast.scoring.detections` and :mod:`midlevel_fast.metrics.detection_ap`: greedy NMS
as the textbook loop over a sorted list with exact rational IoU, and the devkit's ``VOCevaldet.m`` transcribed line
by line (ignored detections kept in the ranking with neither a true nor a false positive, ``VOCap.m``'s loops).
Shares no code with the package."""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

Box = Sequence[float]


def iou_exact(a: Box, b: Box) -> Fraction:
    """IoU of two boxes ``(x0, y0, x1, y1)`` as a fraction (the coordinates' exact binary values)."""
    a = [Fraction(v) for v in a]
    b = [Fraction(v) for v in b]
    iw = max(Fraction(0), min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(Fraction(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else Fraction(0)


def nms_reference(boxes: Sequence[Box], scores: Sequence[float], iou: float,
                  labels: Sequence[int] | None = None) -> list[int]:
    """Indices kept by greedy NMS, best first: sort by score (ties by index), keep a box unless a kept box of the
    same label overlaps it by IoU > ``iou``, the threshold read as the decimal it is written as (0.7 is 7/10, not
    the binary double just below it)."""
    labels = [0] * len(boxes) if labels is None else list(labels)
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(labels[k] != labels[i] or iou_exact(boxes[k], boxes[i]) <= Fraction(str(iou)) for k in kept):
            kept.append(i)
    return kept


def voc_ap_reference(rec: Sequence[float], prec: Sequence[float]) -> float:
    """``VOCap.m``: area under the interpolated precision-recall curve."""
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def voc_ap_11_reference(rec: Sequence[float], prec: Sequence[float], n_pos: int, tp: Sequence[int]) -> float:
    """VOC2007's 11-point AP, the thresholds as exact tenths (recall decided on integers)."""
    total = 0.0
    for t in range(11):
        ps = [p for p, k in zip(prec, tp) if 10 * k >= t * n_pos]
        total += max(ps) if ps else 0.0
    return total / 11


def voc_det_ap_reference(detections: Sequence[tuple[int, float, Box]], truth: Sequence[tuple[Sequence[Box],
                         Sequence[bool]]], method: str = "voc2010", min_iou: float = 0.5) -> float:
    """One class: ``detections`` ``(image, score, box)``, ``truth[image] = (boxes, difficult)``."""
    n_pos = sum(not d for _, diff in truth for d in diff)
    if n_pos == 0:
        return float("nan")
    order = sorted(range(len(detections)), key=lambda i: (-detections[i][1], i))
    detected = [[False] * len(boxes) for boxes, _ in truth]
    tp, fp = [], []
    for d in order:
        img, _, box = detections[d]
        boxes, diff = truth[img]
        ovmax, jmax = Fraction(-1), -1
        for j, g in enumerate(boxes):
            ov = iou_exact(box, g)
            if ov > ovmax:
                ovmax, jmax = ov, j
        if ovmax >= Fraction(str(min_iou)):
            if diff[jmax]:
                tp.append(0)
                fp.append(0)
            elif not detected[img][jmax]:
                tp.append(1)
                fp.append(0)
                detected[img][jmax] = True
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    ctp, cfp, a, b = [], [], 0, 0
    for t, f in zip(tp, fp):
        a, b = a + t, b + f
        ctp.append(a)
        cfp.append(b)
    rec = [t / n_pos for t in ctp]
    prec = [t / (t + f) if t + f else 0.0 for t, f in zip(ctp, cfp)]
    # An ignored detection at the top (tp = fp = 0 so far) has no precision in the devkit (0/0); it adds no
    # point to the curve, so it is dropped here.
    keep = [i for i in range(len(tp)) if ctp[i] + cfp[i] > 0]
    rec, prec, ctp = [rec[i] for i in keep], [prec[i] for i in keep], [ctp[i] for i in keep]
    if method == "voc2007":
        return voc_ap_11_reference(rec, prec, n_pos, ctp)
    return voc_ap_reference(rec, prec)
