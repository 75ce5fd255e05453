"""Training the ROI detector (:class:`midlevel_fast.model.detector.RoiDetector`) from per-image rows of labelled
proposals.

Rows (:func:`detector_rows`), per image: the proposals plus the image's non-difficult objects' boxes
(:func:`~midlevel_fast.training.detection_labels.with_ground_truth`), their ROI features
(:func:`midlevel_fast.features.roi.box_features`, stored float16), Fast R-CNN's labels
(:func:`~midlevel_fast.training.detection_labels.detection_labels`: foreground IoU ``>= fg_iou``, background in
``[bg_low, fg_iou)``, the rest ignored) and each foreground row's object box. ``keep_background`` bounds the
background rows kept per image (a seeded uniform sample), so that a training set fits in memory.

Fit (:func:`fit_detector`):

* the softmax (:func:`train_softmax`) over the ``C`` classes and background on standardised features, AdamW,
  the standardisation folded into the stored weights; its background rows mined over every image's rows
  (:func:`midlevel_fast.training.hard_negatives.mine_hard_negatives`, hardness the log-odds of object against
  background, :class:`LogOdds`), starting from ``BG_PER_FG`` random background rows per foreground row
  (``passes = 0``: those random rows only);
* the box regression: R-CNN's per-class ridge (:func:`~midlevel_fast.training.box_regression_fit.fit_box_regression`)
  of the foreground rows' deltas onto their objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import torch

from midlevel_fast.features.proposals import ProposalConfig
from midlevel_fast.features.roi import PyramidMaps, RoiConfig, box_features
from midlevel_fast.model.detector import RoiDetector
from midlevel_fast.scoring.detections import encode_boxes
from midlevel_fast.training.box_regression_fit import RegressionRows, fit_box_regression
from midlevel_fast.training.detection_labels import detection_labels, with_ground_truth
from midlevel_fast.training.hard_negatives import mine_hard_negatives

FG_IOU, BG_LOW = 0.5, 0.1
BG_PER_FG = 3
KEEP_BACKGROUND = 400


class DetectorRows(NamedTuple):
    """One image's training rows (module docstring): ``features`` float16 ``(N, F)``, ``boxes`` float32 ``(N, 4)``,
    ``labels`` int64 ``(N,)`` (``class + 1``, background 0, ignored -1), ``targets`` float32 ``(N, 4)`` the
    foreground rows' object boxes (zeros elsewhere)."""

    features: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor

    def subset(self, mask: torch.Tensor) -> DetectorRows:
        """The rows where ``mask (N,)`` is true."""
        return DetectorRows(*(t[mask] for t in self))


def detector_rows(pyramid: PyramidMaps, proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                  gt_difficult: torch.Tensor, roi: RoiConfig, *, fg_iou: float = FG_IOU, bg_low: float = BG_LOW,
                  keep_background: int | None = KEEP_BACKGROUND, seed: int = 0) -> DetectorRows:
    """The rows of one image (module docstring): ``proposals (N, 4)`` and the objects' ``gt_boxes (G, 4)``,
    ``gt_labels (G,)`` class indices and ``gt_difficult (G,)`` in the image pixels of ``pyramid``. With
    ``keep_background``, every foreground row and at most that many background rows (``max(keep_background,
    20·foreground)``), drawn with ``seed``; ignored rows are dropped."""
    boxes = with_ground_truth(proposals, gt_boxes, gt_difficult).float()
    labels, matched = detection_labels(boxes, gt_boxes, gt_labels, gt_difficult, positive_iou=fg_iou,
                                       negative_iou=fg_iou, bg_low=bg_low)
    fg = (labels > 0).nonzero()[:, 0]
    bg = (labels == 0).nonzero()[:, 0]
    if keep_background is not None:
        g = torch.Generator().manual_seed(seed)
        bg = bg[torch.randperm(len(bg), generator=g)[: max(keep_background, 20 * len(fg))]].sort().values
    keep = torch.cat([fg, bg])
    targets = torch.zeros(len(keep), 4)
    targets[: len(fg)] = torch.as_tensor(gt_boxes)[matched[fg]].float()
    feats = box_features(pyramid, boxes[keep], roi).half().cpu()
    return DetectorRows(feats, boxes[keep], labels[keep], targets)


def train_softmax(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float, *, epochs: int = 15,
                  lr: float = 2e-3, batch: int = 4096, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear softmax over ``classes`` outputs (background 0) of ``x (M, F)`` with labels ``y (M,)`` int64:
    ``(weight (classes, F), bias (classes,))`` float32 with the features' standardisation folded in. AdamW with
    ``weight_decay`` on the standardised features, minibatches of ``batch`` in a seeded order."""
    if len(x) == 0 or not (y > 0).any():
        raise ValueError("the detector needs at least one foreground row to train on")
    # One float32 copy, standardised in place: the rows are wide (7,680 ROI features) and many.
    z = x.to(torch.float32, copy=True)
    mean, std = z.mean(0), z.std(0).clamp(min=1e-3)
    z.sub_(mean).div_(std)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(z), generator=g).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(layer(z[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return layer.weight / std, layer.bias - (layer.weight * (mean / std)).sum(1)


class LogOdds:
    """A softmax ``(weight, bias)`` as the scorer of :func:`mine_hard_negatives`: per row log P(object) - log
    P(background), so that R-CNN's margin of -1 reads as "background at most e times as likely as an object"."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.float() @ self.weight.t() + self.bias
        return torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]


@dataclass(frozen=True)
class FitSettings:
    """What :func:`fit_detector` does: the softmax's ``weight_decay``, ``epochs`` and ``lr``, the mining ``passes``
    (0: random background only) and ``max_negatives``, the regression's ``ridge`` and the detector's ``steps``
    (0: no regression is fitted)."""

    weight_decay: float = 0.1
    epochs: int = 15
    lr: float = 2e-3
    passes: int = 2
    max_negatives: int = 60_000
    ridge: float = 1.0
    steps: int = 2


DEFAULT_FIT = FitSettings()


def regression_rows(rows: Sequence[DetectorRows]) -> RegressionRows:
    """The foreground rows of ``rows`` with R-CNN deltas onto their objects (class indices, not ``class + 1``)."""
    fg = [r.subset(r.labels > 0) for r in rows]
    return RegressionRows(torch.cat([r.features for r in fg]), torch.cat([r.boxes for r in fg]),
                          torch.cat([encode_boxes(r.boxes, r.targets) for r in fg]),
                          torch.cat([r.labels - 1 for r in fg]))


def fit_detector(rows: Sequence[DetectorRows], num_classes: int, proposals: ProposalConfig, roi: RoiConfig,
                 settings: FitSettings = DEFAULT_FIT, description: dict[str, Any] | None = None) -> RoiDetector:
    """The detector trained on ``rows`` (module docstring) for ``num_classes`` classes, scoring ``proposals``
    with features ``roi`` (what the rows were made with); ``description`` is stored with it, completed with the
    settings and the mining log."""
    images = [(r.features, r.labels) for r in rows]
    positives = sum(int((r.labels > 0).sum()) for r in rows)
    if not positives:
        raise ValueError("the detector needs at least one foreground row to train on (no image has an object)")
    scorer, log = mine_hard_negatives(
        images, lambda x, y: LogOdds(*train_softmax(x, y, num_classes + 1, settings.weight_decay,
                                                    epochs=settings.epochs, lr=settings.lr)),
        passes=settings.passes, initial_negatives=min(BG_PER_FG * positives, settings.max_negatives),
        max_negatives=settings.max_negatives)
    regression = None
    if settings.steps:
        regression = fit_box_regression(regression_rows(rows), num_classes, settings.ridge, features="roi")
    record = {**(description or {}), "weight_decay": settings.weight_decay, "epochs": settings.epochs,
              "lr": settings.lr, "passes": settings.passes, "ridge": settings.ridge, "images": len(rows),
              "positives": log.positives, "negatives": list(log.negatives)}
    return RoiDetector(scorer.weight, scorer.bias, regression, proposals, roi, steps=settings.steps,
                       description=record)

