"""Fitting the box regression (:mod:`midlevel_fast.model.box_regression`) on the positive patches of a feature
cache, as R-CNN fits its regressors on the proposals near each object.

Rows (:func:`regression_rows`): every cached patch that is a positive of the paper's labelling
(:func:`midlevel_fast.training.labels.qualification`: it qualifies for exactly one object, and that object is not
difficult), with that object's box as the target, encoded as R-CNN deltas relative to the patch
(:func:`midlevel_fast.scoring.detections.encode_boxes`). These are the windows the detector starts from: a positive
patch may be five times its object, so the regression must learn to shrink as well as to move.

Fit (:func:`fit_box_regression`): per class and per delta, ridge regression on the class's rows,
``min_w Σ (x·w + b − t)² + ridge·n·|w|²`` (the bias unpenalised; the penalty scales with the class's row count
``n`` so that one ``ridge`` suits classes of any size), solved in closed form in float64 (in the dual when a
class has fewer rows than features). A class with fewer than
:data:`MIN_ROWS` rows keeps the windows as they are (zero deltas) and is listed in the description's
``identity_classes``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from midlevel_fast.model.box_regression import BoxRegression
from midlevel_fast.scoring.detections import encode_boxes
from midlevel_fast.cache.feature_cache import FeatureCache
from midlevel_fast.training.labels import qualification
from midlevel_fast.datasets.voc import VocImage, object_arrays

DEFAULT_RIDGE = 1.0
MIN_ROWS = 20


@dataclass
class RegressionRows:
    """Training rows: ``features`` float16 ``(R, F)``, ``windows`` float32 ``(R, 4)`` patch boxes, ``targets``
    float64 ``(R, 4)`` deltas onto the object, ``labels`` int64 ``(R,)`` its class."""

    features: torch.Tensor
    windows: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor


def regression_rows(cache: FeatureCache, images: Sequence[VocImage], classes: Sequence[str]) -> RegressionRows:
    """The positive patches of ``images`` in ``cache`` with their objects' boxes (module docstring); none when the
    images have no objects of ``classes``."""
    feats, windows, targets, labels = [], [], [], []
    for img in images:
        c = cache.load(img.image_id)
        boxes, cls, difficult = object_arrays(img, classes)
        if not len(boxes):
            continue
        _, qualifies = qualification(c.boxes, boxes)
        obj = qualifies.to(torch.uint8).argmax(dim=1)
        keep = (qualifies.sum(dim=1) == 1) & ~difficult[obj]
        if not keep.any():
            continue
        mask = keep.numpy()
        win = torch.from_numpy(c.boxes[mask])
        feats.append(torch.from_numpy(np.asarray(c.features[mask])))
        windows.append(win)
        targets.append(encode_boxes(win, boxes[obj[keep]]))
        labels.append(cls[obj[keep]])
    if not feats:  # no positive patch: every class keeps its windows
        dim = cache.config.feature_dim
        return RegressionRows(torch.zeros(0, dim, dtype=torch.float16), torch.zeros(0, 4), torch.zeros(0, 4,
                              dtype=torch.float64), torch.zeros(0, dtype=torch.int64))
    return RegressionRows(torch.cat(feats), torch.cat(windows), torch.cat(targets), torch.cat(labels))


def _ridge_solve(x: torch.Tensor, t: torch.Tensor, penalty: float) -> torch.Tensor:
    """``argmin_w |x·w − t|² + penalty·|w|²`` for centred ``x (n, F)`` and ``t (n, k)``: the primal
    ``(xᵀx + pI)⁻¹ xᵀt`` when ``n >= F``, else the dual ``xᵀ (x xᵀ + pI)⁻¹ t``, the same solution with an
    ``n × n`` system instead of an ``F × F`` one (ROI features are thousands wide, a class has hundreds of rows)."""
    if len(x) >= x.shape[1]:
        gram = x.t() @ x
        gram.diagonal().add_(penalty)
        return torch.linalg.solve(gram, x.t() @ t)
    kernel = x @ x.t()
    kernel.diagonal().add_(penalty)
    return x.t() @ torch.linalg.solve(kernel, t)


def fit_box_regression(rows: RegressionRows, num_classes: int, ridge: float = DEFAULT_RIDGE,
                       features: str = "mid-level") -> BoxRegression:
    """Per-class ridge regression of ``rows.targets`` on ``rows.features`` (module docstring); ``features`` says
    what the rows' features are (:data:`midlevel_fast.model.box_regression.REGRESSION_FEATURES`)."""
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    dim = rows.features.shape[1]
    weight = torch.zeros(num_classes, 4, dim, dtype=torch.float64)
    bias = torch.zeros(num_classes, 4, dtype=torch.float64)
    counts = torch.bincount(rows.labels, minlength=num_classes).tolist()
    identity = []
    for c in range(num_classes):
        if counts[c] < MIN_ROWS:
            identity.append(c)
            continue
        sel = rows.labels == c
        x = rows.features[sel].double()
        t = rows.targets[sel].double()
        x_mean, t_mean = x.mean(dim=0), t.mean(dim=0)
        w = _ridge_solve(x - x_mean, t - t_mean, ridge * counts[c])  # (F, 4)
        weight[c] = w.t()
        bias[c] = t_mean - x_mean @ w
    return BoxRegression(weight.float(), bias.float(),
                         {"ridge": ridge, "rows": counts, "identity_classes": identity, "features": features,
                          "parametrisation": "rcnn"})
