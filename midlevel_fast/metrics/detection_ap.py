"""VOC detection average precision (the devkit's ``VOCevaldet.m``), per class and mean.

Convention: boxes ``(x0, y0, x1, y1)`` in continuous pixel coordinates, as :mod:`midlevel_fast.datasets.voc` reads
them (``xmin - 1, ymin - 1, xmax, ymax`` of the XML): the continuous IoU of these boxes is the devkit's IoU of the
integer boxes with its ``+1`` widths.

Rules, per class:

* every detection of the class, over all images, is ranked by decreasing score (a stable sort: ties keep their
  input order, image by image, as MATLAB's ``sort``);
* each detection, in rank order, is compared with the ground-truth boxes of its class in its image (difficult ones
  included) and takes the one of largest IoU (the first of equal IoUs). If that IoU is at least ``min_iou`` (0.5):
  a difficult box makes the detection neither a true nor a false positive; a box not yet matched makes it a true
  positive and is marked matched; an already matched box makes it a false positive (a duplicate). Otherwise it is
  a false positive;
* ``n_pos`` counts the non-difficult boxes; AP from the cumulative true positives of the counted detections by
  :func:`midlevel_fast.metrics.average_precision.ranked_average_precision` (``"voc2010"`` area or ``"voc2007"``
  11-point).
  A class without non-difficult boxes has AP ``NaN`` and is left out of the mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from midlevel_fast.scoring.detections import Detection, pairwise_iou
from midlevel_fast.metrics.average_precision import METHODS, Method, ranked_average_precision

MIN_IOU = 0.5


@dataclass
class GroundTruth:
    """The objects of one image: ``boxes`` float ``(M, 4)``, ``labels`` class names ``(M,)``, ``difficult`` bool
    ``(M,)``."""

    boxes: np.ndarray
    labels: Sequence[str]
    difficult: np.ndarray


def detection_ap(
    detections: Sequence[Sequence[Detection]],
    truth: Sequence[GroundTruth],
    class_names: Sequence[str],
    method: Method = "voc2010",
    min_iou: float = MIN_IOU,
) -> tuple[np.ndarray, float]:
    """Per-class AP ``(C,)`` float64 and their mean (``NaN`` classes left out) of ``detections[i]``, the
    detections of image ``i``, against ``truth[i]``, by the rules of the module docstring."""
    if len(detections) != len(truth):
        raise ValueError(f"detections for {len(detections)} images, ground truth for {len(truth)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    known = set(class_names)
    for i, dets in enumerate(detections):
        unknown = {d.label for d in dets} - known
        if unknown:
            raise ValueError(f"image {i}: detections of unknown classes {sorted(unknown)}")
    ap = np.array([_class_ap(detections, truth, name, method, min_iou) for name in class_names])
    finite = ap[~np.isnan(ap)]
    return ap, float(finite.mean()) if len(finite) else float("nan")


def _class_ap(detections: Sequence[Sequence[Detection]], truth: Sequence[GroundTruth], name: str, method: Method,
              min_iou: float) -> float:
    gt_boxes, gt_difficult = [], []
    for t in truth:
        mask = np.asarray([lab == name for lab in t.labels], dtype=bool)
        gt_boxes.append(torch.as_tensor(np.asarray(t.boxes, dtype=np.float64).reshape(-1, 4)[mask]))
        gt_difficult.append(np.asarray(t.difficult, dtype=bool).reshape(-1)[mask])
    n_pos = int(sum((~d).sum() for d in gt_difficult))
    rows = [(i, d.score, d.box) for i, dets in enumerate(detections) for d in dets if d.label == name]
    if not rows:
        return ranked_average_precision(np.zeros(0, dtype=np.int64), n_pos, method)
    image = np.array([r[0] for r in rows])
    order = np.argsort(-np.array([r[1] for r in rows], dtype=np.float64), kind="stable")
    boxes = torch.tensor([r[2] for r in rows], dtype=torch.float64)
    # IoU with the class's boxes of the detection's image, computed per image at once.
    best_iou = np.full(len(rows), -np.inf)
    best_gt = np.zeros(len(rows), dtype=np.int64)
    for i in np.unique(image):
        sel = np.flatnonzero(image == i)
        if len(gt_boxes[i]):
            iou = pairwise_iou(boxes[sel], gt_boxes[i]).numpy()
            best_iou[sel], best_gt[sel] = iou.max(axis=1), iou.argmax(axis=1)
    matched = [np.zeros(len(d), dtype=bool) for d in gt_difficult]
    hits = []
    for r in order:
        i, j = image[r], best_gt[r]
        if best_iou[r] >= min_iou:
            if gt_difficult[i][j]:
                continue
            hits.append(not matched[i][j])
            matched[i][j] = True
        else:
            hits.append(False)
    return ranked_average_precision(np.cumsum(np.asarray(hits, dtype=np.int64)), n_pos, method)
