"""Soft non-maximum suppression (Bodla et al., ICCV 2017): overlapping boxes are down-weighted instead of dropped.

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel ``i`` covers ``[i, i+1)``), as in
:mod:`midlevel_fast.scoring.detections`, whose :func:`~midlevel_fast.scoring.detections.nms` this generalises.

The paper's Algorithm 1, in float64: while boxes remain, the one of highest current score ``M`` is kept with that
score; every other remaining box ``b`` has its score multiplied by ``f(IoU(M, b))`` and is dropped when the score
falls below ``score_threshold``. The decay ``f`` (``method``):

* ``"linear"``: ``1 - IoU`` when ``IoU > iou``, else 1;
* ``"gaussian"``: ``exp(-IoU² / sigma)`` for every box;
* ``"hard"``: 0 when ``IoU > iou``, else 1: greedy NMS, so that with ``score_threshold > 0`` the kept boxes are
  exactly :func:`~midlevel_fast.scoring.detections.nms`'s on the boxes of score ``>= score_threshold``.

``IoU > iou`` is strict, as :func:`~midlevel_fast.scoring.detections.nms` suppresses (and the authors' code
decays); the paper's equation writes ``>=``, which differs only at an IoU exactly on the threshold. Boxes whose
score is below ``score_threshold`` from the start are dropped before the loop, so every kept box's new score is at
least ``score_threshold``. Ties in the current score go to the lowest input index (exact float64 equality), so the
kept boxes come out by decreasing new score, equal scores in input order, as :func:`nms`'s do.
"""
from __future__ import annotations

from typing import Literal

import torch

from midlevel_fast.scoring.detections import _check_nms_args, pairwise_iou

SoftNmsMethod = Literal["linear", "gaussian", "hard"]
SOFT_NMS_IOU = 0.3
SOFT_NMS_SIGMA = 0.5
SOFT_NMS_SCORE_THRESHOLD = 0.001


def _check_soft_nms_args(boxes: torch.Tensor, scores: torch.Tensor, method: str, iou: float, sigma: float,
                         score_threshold: float) -> None:
    _check_nms_args(boxes, scores, iou)
    if method not in ("linear", "gaussian", "hard"):
        raise ValueError(f"method must be 'linear', 'gaussian' or 'hard', got {method!r}")
    if not sigma > 0 or not score_threshold >= 0:
        raise ValueError(f"need sigma > 0 and score_threshold >= 0, got {sigma}, {score_threshold}")
    # The decay multiplies scores by weights in [0, 1]: a negative score would rise towards 0.
    if len(scores) and not (torch.isfinite(scores).all() and scores.min() >= 0):
        raise ValueError("scores must be finite and >= 0 (probabilities); shift or exponentiate logits first")


def _decay(overlap: torch.Tensor, method: str, iou: float, sigma: float) -> torch.Tensor:
    if method == "linear":
        return torch.where(overlap > iou, 1 - overlap, torch.ones_like(overlap))
    if method == "gaussian":
        return torch.exp(-(overlap * overlap) / sigma)
    return (overlap <= iou).to(overlap.dtype)


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    method: SoftNmsMethod = "linear",
    iou: float = SOFT_NMS_IOU,
    sigma: float = SOFT_NMS_SIGMA,
    score_threshold: float = SOFT_NMS_SCORE_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS by the rule of the module docstring: ``(keep, new_scores)``, the int64 indices of the kept boxes
    in the order they were kept (decreasing new score, equal scores in input order) and their decayed scores, in
    ``scores``' dtype (computed in float64).

    ``boxes (N, 4)``, ``scores (N,)`` finite and ``>= 0``; ``iou`` in ``[0, 1]`` is the linear and hard decays'
    threshold, ``sigma > 0`` the Gaussian's width, ``score_threshold >= 0`` (0 keeps every box, only
    rescored). One vectorised step per kept box: O(N²) work, O(N) memory.
    """
    _check_soft_nms_args(boxes, scores, method, iou, sigma, score_threshold)
    keep, new = _soft_nms(boxes, scores, method, iou, sigma, score_threshold)
    return keep, new.to(_out_dtype(scores))


def _out_dtype(scores: torch.Tensor) -> torch.dtype:
    return scores.dtype if scores.dtype.is_floating_point else torch.float64


def _soft_nms(boxes: torch.Tensor, scores: torch.Tensor, method: str, iou: float, sigma: float,
              score_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_nms` on checked arguments, the new scores in float64."""
    s = scores.to(device="cpu", dtype=torch.float64)
    # Remaining boxes stay in input order, so that argmax (the first maximal entry) breaks ties by input index.
    rest = torch.nonzero(s >= score_threshold).flatten()
    b, s = boxes.to(device="cpu", dtype=torch.float64)[rest], s[rest]
    keep, kept_scores = [], []
    while len(rest):
        m = int(torch.argmax(s))
        top = b[m: m + 1]
        keep.append(int(rest[m]))
        kept_scores.append(float(s[m]))
        others = torch.arange(len(rest)) != m
        rest, b, s = rest[others], b[others], s[others]
        s = s * _decay(pairwise_iou(top, b)[0], method, iou, sigma)
        alive = s >= score_threshold
        rest, b, s = rest[alive], b[alive], s[alive]
    return torch.tensor(keep, dtype=torch.int64), torch.tensor(kept_scores, dtype=torch.float64)


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: SoftNmsMethod = "linear",
    iou: float = SOFT_NMS_IOU,
    sigma: float = SOFT_NMS_SIGMA,
    score_threshold: float = SOFT_NMS_SCORE_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_nms` within each label: boxes of different labels never decay each other. ``(keep,
    new_scores)`` of all labels merged by decreasing new score, equal scores in input order (as
    :func:`~midlevel_fast.scoring.detections.batched_nms`). ``labels (N,)`` integers."""
    _check_soft_nms_args(boxes, scores, method, iou, sigma, score_threshold)
    if labels.shape != (len(boxes),):
        raise ValueError(f"labels must be (N,) for the {len(boxes)} boxes, got {tuple(labels.shape)}")
    if not len(boxes):
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=_out_dtype(scores))
    by_label = torch.sort(labels, stable=True).indices
    _, counts = torch.unique_consecutive(labels[by_label], return_counts=True)
    keep, new = [], []
    for group in torch.split(by_label, counts.tolist()):
        k, v = _soft_nms(boxes[group], scores[group], method, iou, sigma, score_threshold)
        keep.append(group[k])
        new.append(v)
    kept, rescored = torch.cat(keep), torch.cat(new)
    by_index = torch.sort(kept).indices
    kept, rescored = kept[by_index], rescored[by_index]
    order = torch.sort(rescored, descending=True, stable=True).indices
    return kept[order], rescored[order].to(_out_dtype(scores))
