"""Detections of the ROI detector (:class:`midlevel_fast.model.detector.RoiDetector`) from one image's trunk maps
(:func:`midlevel_fast.features.roi.image_maps`, the maps the dense mode's windows are computed from).

Rule (:func:`roi_detections`), for an image of ``width × height``:

1. the proposals: :func:`midlevel_fast.features.proposals.dense_proposals` under the detector's ``proposals``
   (or the ones given), their ROI features (:func:`midlevel_fast.features.roi.box_features`) and class
   probabilities (the softmax's object columns);
2. the candidates of class ``c``: the proposals with probability ``>= candidate_min`` for ``c``, the
   ``candidates_per_class`` best (equal scores: the lower proposal index first);
3. ``steps`` times (iterative localisation): the candidate's box moved by the class's box regression
   (:func:`midlevel_fast.scoring.detections.decode_boxes`), clipped to the image, dropped when under one pixel
   wide or high, its features pooled again at the new box and its class probability read again; the candidate's
   score is the mean of its probabilities at every step (the proposal's included), its box the last one;
4. per class greedy NMS at ``nms_iou`` (:func:`midlevel_fast.scoring.detections.batched_nms`); with
   ``voting_iou``, each kept box is replaced by the score-weighted mean of the class's candidate boxes at IoU
   ``>= voting_iou`` with it (box voting, Gidaris & Komodakis 2015), its score kept;
5. the detections scoring ``>= threshold``, all classes merged best first, the ``max_per_image`` best.

Boxes are ``(x0, y0, x1, y1)`` float32 in continuous image pixels (:mod:`midlevel_fast.scoring.detections`).
"""
from __future__ import annotations

from typing import Sequence

import torch

from midlevel_fast.features.proposals import dense_proposals
from midlevel_fast.features.roi import PyramidMaps, box_features
from midlevel_fast.model.detector import RoiDetector
from midlevel_fast.scoring.detections import (DETECTION_THRESHOLD, MAX_PER_IMAGE, Detection, batched_nms,
                                              box_tuple, decode_boxes, pairwise_iou)


def candidates(probs: torch.Tensor, minimum: float, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, classes)`` int64 of step 2 of the module docstring, class by class, best first within a class."""
    rows, classes = [], []
    for c in range(probs.shape[1]):
        r = (probs[:, c] >= minimum).nonzero()[:, 0]
        r = r[torch.sort(probs[r, c], descending=True, stable=True).indices[:per_class]]
        rows.append(r)
        classes.append(torch.full((len(r),), c, dtype=torch.int64))
    return torch.cat(rows), torch.cat(classes)


def _localised(pyramid: PyramidMaps, detector: RoiDetector, boxes: torch.Tensor, classes: torch.Tensor,
               feats: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 3 of the module docstring: the candidates' last boxes, their classes and their mean scores."""
    plan = pyramid.plan
    limit = torch.tensor([plan.width, plan.height] * 2, dtype=torch.float32)
    total = scores.clone()
    for _ in range(detector.steps):
        assert detector.regression is not None  # steps > 0 needs one (RoiDetector checks)
        moved = decode_boxes(boxes, detector.regression.deltas(feats, classes).cpu())
        boxes = torch.minimum(moved.clamp(min=0), limit)
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        boxes, classes, total = boxes[ok], classes[ok], total[ok]
        feats = box_features(pyramid, boxes, detector.roi)
        total += detector.probabilities(feats).cpu()[torch.arange(len(classes)), classes]
    return boxes, classes, total / (detector.steps + 1)


def _voted(boxes: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, keep: torch.Tensor,
           iou: float) -> torch.Tensor:
    """The kept boxes after box voting (step 4 of the module docstring), float32 ``(len(keep), 4)``."""
    out = boxes[keep].clone()
    for j, i in enumerate(keep.tolist()):
        same = (classes == classes[i]).nonzero()[:, 0]
        near = same[pairwise_iou(boxes[i][None].double(), boxes[same].double())[0] >= iou]
        w = scores[near].double()[:, None]
        out[j] = ((boxes[near].double() * w).sum(0) / w.sum()).float()
    return out


def roi_detections(
    pyramid: PyramidMaps,
    detector: RoiDetector,
    class_names: Sequence[str],
    *,
    proposals: torch.Tensor | None = None,
    threshold: float = DETECTION_THRESHOLD,
    max_per_image: int = MAX_PER_IMAGE,
) -> list[Detection]:
    """The detections of the image of ``pyramid`` by the rule of the module docstring, labelled with
    ``class_names`` (the detector's ``C`` classes, in its column order).

    ``proposals``: ``(N, 4)`` boxes in image pixels to score instead of the detector's dense proposals (clipped to
    the image; ``ValueError`` for a box with no area inside it, as :func:`~midlevel_fast.features.roi.box_features`
    says); an empty set gives no detections. Needs ``threshold`` in ``[0, 1]`` and ``max_per_image >= 0``.
    """
    if len(class_names) != detector.num_classes:
        raise ValueError(f"the detector has {detector.num_classes} classes, got {len(class_names)} class names")
    if not 0 <= threshold <= 1 or max_per_image < 0:
        raise ValueError(f"need threshold in [0, 1] and max_per_image >= 0, got {threshold}, {max_per_image}")
    plan = pyramid.plan
    if proposals is None:
        proposals = dense_proposals(plan.width, plan.height, pyramid.net, detector.proposals)
    feats = box_features(pyramid, proposals, detector.roi)
    if not len(feats):
        return []
    limit = torch.tensor([plan.width, plan.height] * 2, dtype=torch.float32)
    boxes = torch.minimum(torch.as_tensor(proposals).float().clamp(min=0), limit)
    probs = detector.probabilities(feats).cpu()
    rows, classes = candidates(probs, detector.candidate_min, detector.candidates_per_class)
    boxes, classes, scores = _localised(pyramid, detector, boxes[rows], classes, feats[rows.to(feats.device)],
                                        probs[rows, classes])
    keep = batched_nms(boxes, scores, classes, detector.nms_iou)
    keep = keep[scores[keep] >= threshold][:max_per_image]
    kept = boxes[keep] if detector.voting_iou is None else _voted(boxes, classes, scores, keep, detector.voting_iou)
    return [Detection(class_names[int(classes[i])], float(scores[i]), box_tuple(box))
            for i, box in zip(keep.tolist(), kept)]
