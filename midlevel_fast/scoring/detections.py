"""Detections: boxes of objects from the scored windows (what R-CNN added to window classification).

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the image (pixel ``i`` covers
``[i, i+1)``), so a box's width is ``x1 - x0`` with no ``+1``.

Rule (:func:`detect`), per class:

* candidates: the windows whose class probability is at least ``threshold``;
* each candidate's box is its window, moved by the head's box regression when it has one
  (:func:`decode_boxes`, R-CNN's parametrisation: ``(dx, dy, dw, dh)`` with the centre moved by ``dx·w, dy·h``
  and the sides scaled by ``exp(dw), exp(dh)``), then clipped to the image;
* greedy non-maximum suppression (:func:`nms`): the best box is kept and every box overlapping it by IoU
  ``> iou`` is dropped, and so on down the list;
* score: the window's class probability. All classes' detections are merged best first and cut to ``max_per_image``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

from midlevel_fast.model.box_regression import BoxRegression

# exp(dw) is clamped here (as detectron's bbox_xform_clip, log(1000/16)) so that a wild regression cannot overflow.
MAX_LOG_SCALE = math.log(1000.0 / 16)
DETECTION_THRESHOLD = 0.05
NMS_IOU = 0.5
MAX_PER_IMAGE = 100


class Detection(NamedTuple):
    """One detected object: ``label`` (a class name), ``score`` (the window's class probability) and ``box``
    ``(x0, y0, x1, y1)`` in image pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU ``(N, M)`` of boxes ``a (N, 4)`` and ``b (M, 4)`` in their dtype; an empty union gives 0."""
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


# IoU entries of one suppression step (float64): a few temporaries of this size bound nms's memory, whatever N.
_NMS_BLOCK = 512
_NMS_CHUNK = 1 << 20


def _greedy_within(over: torch.Tensor) -> torch.Tensor:
    """Greedy suppression inside one block of boxes sorted best first: ``over (m, m)`` says which pairs overlap
    by more than the threshold; the bool mask of the kept rows (a row is kept when no kept row before it
    overlaps it). One vectorised step per kept row."""
    alive = torch.ones(len(over), dtype=torch.bool)
    keep = torch.zeros(len(over), dtype=torch.bool)
    i = 0
    while True:
        keep[i] = True
        alive &= ~over[i]
        alive[: i + 1] = False
        rest = torch.nonzero(alive[i + 1:]).flatten()
        if not len(rest):
            return keep
        i = i + 1 + int(rest[0])


def _check_nms_args(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (len(boxes),):
        raise ValueError(f"boxes must be (N, 4) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    if not 0 <= iou <= 1:
        raise ValueError(f"iou must be in [0, 1], got {iou}")


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float = NMS_IOU) -> torch.Tensor:
    """Greedy non-maximum suppression: int64 indices of the kept boxes, best score first.

    Boxes are visited by decreasing score (a stable sort: equal scores keep their input order); a box is kept
    when its IoU (float64, :func:`pairwise_iou`) with every box kept before it is at most ``iou``.
    ``boxes (N, 4)``, ``scores (N,)``. Memory is O(N): the sorted boxes go in blocks of ``_NMS_BLOCK``; a
    block's boxes still alive suppress each other (a block × block matrix), then the block's kept boxes suppress
    the later boxes still alive, ``_NMS_CHUNK`` IoU entries at a time.
    """
    _check_nms_args(boxes, scores, iou)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].double()
    alive = torch.ones(len(b), dtype=torch.bool)
    kept = [torch.zeros(0, dtype=torch.int64)]
    for start in range(0, len(b), _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, len(b))
        idx = start + torch.nonzero(alive[start:stop]).flatten()
        if not len(idx):
            continue
        idx = idx[_greedy_within(pairwise_iou(b[idx], b[idx]) > iou)]
        kept.append(idx)
        later = stop + torch.nonzero(alive[stop:]).flatten()
        step = max(1, _NMS_CHUNK // len(idx))
        for s in range(0, len(later), step):
            part = later[s: s + step]
            alive[part[(pairwise_iou(b[idx], b[part]) > iou).any(dim=0)]] = False
    return order[torch.cat(kept)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float = NMS_IOU) -> torch.Tensor:
    """:func:`nms` within each label: boxes of different labels never suppress each other. int64 indices of the
    kept boxes of all labels, best score first (equal scores in input order, as :func:`nms`). Each label is
    suppressed on its own, so that the work is the sum of the labels' squared counts, not the total's square."""
    _check_nms_args(boxes, scores, iou)
    if labels.shape != (len(boxes),):
        raise ValueError(f"labels must be (N,) for the {len(boxes)} boxes, got {tuple(labels.shape)}")
    if not len(boxes):
        return torch.zeros(0, dtype=torch.int64)
    by_label = torch.sort(labels, stable=True).indices
    _, counts = torch.unique_consecutive(labels[by_label], return_counts=True)
    kept = torch.cat([group[nms(boxes[group], scores[group], iou)]
                      for group in torch.split(by_label, counts.tolist())])
    kept = torch.sort(kept).values
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def decode_boxes(windows: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """R-CNN's box decoding: ``windows (N, 4)`` and ``deltas (N, 4)`` ``(dx, dy, dw, dh)`` -> boxes ``(N, 4)``
    centred at ``(cx + dx·w, cy + dy·h)`` with sides ``w·exp(dw), h·exp(dh)`` (float32)."""
    w = windows[:, 2] - windows[:, 0]
    h = windows[:, 3] - windows[:, 1]
    cx = windows[:, 0] + 0.5 * w + deltas[:, 0] * w
    cy = windows[:, 1] + 0.5 * h + deltas[:, 1] * h
    pw = w * torch.exp(deltas[:, 2].clamp(max=MAX_LOG_SCALE))
    ph = h * torch.exp(deltas[:, 3].clamp(max=MAX_LOG_SCALE))
    return torch.stack([cx - 0.5 * pw, cy - 0.5 * ph, cx + 0.5 * pw, cy + 0.5 * ph], dim=1).float()


def encode_boxes(windows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`decode_boxes`: the deltas ``(N, 4)`` that move ``windows`` onto ``targets``
    (float64)."""
    w = (windows[:, 2] - windows[:, 0]).double()
    h = (windows[:, 3] - windows[:, 1]).double()
    tw = (targets[:, 2] - targets[:, 0]).double()
    th = (targets[:, 3] - targets[:, 1]).double()
    dx = ((targets[:, 0] + targets[:, 2]).double() - (windows[:, 0] + windows[:, 2]).double()) / (2 * w)
    dy = ((targets[:, 1] + targets[:, 3]).double() - (windows[:, 1] + windows[:, 3]).double()) / (2 * h)
    return torch.stack([dx, dy, torch.log(tw / w), torch.log(th / h)], dim=1)


def detect(
    windows: torch.Tensor,
    probs: torch.Tensor,
    class_names: Sequence[str],
    image_size: tuple[int, int],
    features: torch.Tensor | None = None,
    regression: BoxRegression | None = None,
    *,
    threshold: float = DETECTION_THRESHOLD,
    iou: float = NMS_IOU,
    max_per_image: int = MAX_PER_IMAGE,
) -> list[Detection]:
    """The detections of one image by the rule of the module docstring.

    ``windows (M, 4)`` window boxes, ``probs (M, C)`` their class probabilities, ``image_size`` ``(height,
    width)``; ``features (M, F)`` the windows' mid-level vectors and ``regression`` the head's box regression
    (:class:`midlevel_fast.model.box_regression.BoxRegression`), or ``None`` to keep the windows as boxes.
    """
    if probs.ndim != 2 or probs.shape != (len(windows), len(class_names)):
        raise ValueError(f"probs must be (M, C) = ({len(windows)}, {len(class_names)}), got {tuple(probs.shape)}")
    if regression is not None and (features is None or len(features) != len(windows)
                                   or regression.num_classes != len(class_names)):
        raise ValueError(f"box regression needs the features of the {len(windows)} windows and "
                         f"{len(class_names)} classes")
    if not 0 <= threshold <= 1 or max_per_image < 0:
        raise ValueError(f"need threshold in [0, 1] and max_per_image >= 0, got {threshold}, {max_per_image}")
    h, w = image_size
    win, label = torch.nonzero(probs >= threshold, as_tuple=True)
    if not len(win):
        return []
    boxes = windows[win].float()
    if regression is not None and features is not None:  # features is set whenever regression is (checked above)
        boxes = decode_boxes(boxes, regression.deltas(features[win], label).cpu())
    limit = torch.tensor([w, h, w, h], dtype=boxes.dtype)
    boxes = torch.minimum(boxes.clamp(min=0), limit)
    # A box squeezed to nothing by clipping (a regression that left the image) is no detection.
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, label, score = boxes[ok], label[ok], probs[win, label][ok].float()
    keep = batched_nms(boxes, score, label, iou)[:max_per_image]
    return [Detection(class_names[int(label[i])], float(score[i]), box_tuple(boxes[i])) for i in keep.tolist()]


def box_tuple(box: torch.Tensor) -> tuple[float, float, float, float]:
    """``box (4,)`` as ``(x0, y0, x1, y1)`` Python floats."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1
