"""Box regression: per class, a linear map from a window's mid-level vector to the move that puts the window onto
the object it shows (R-CNN's bounding-box regression, Girshick et al. 2014, appendix C).

Convention: ``deltas = features @ weight[c].T + bias[c]`` are ``(dx, dy, dw, dh)`` in R-CNN's parametrisation
(:func:`midlevel_fast.scoring.detections.decode_boxes`): the centre moves by ``(dx·w, dy·h)`` of the window's
size, the sides scale by ``exp(dw), exp(dh)``. ``weight`` is ``(C, 4, F)`` and ``bias`` ``(C, 4)``, float32,
for the head's ``C`` reported classes. Fitted by :mod:`midlevel_fast.training.box_regression_fit` and stored in the
head file beside the weights.

What it reads (:attr:`BoxRegression.features`): ``"mid-level"``, the window's mid-level vector (``F`` features), or
``"layout"``, that vector followed by the means of the window's four quadrants of trunk cells
(:class:`midlevel_fast.backbones.layout.WindowLayout`, ``F + 4·D`` features), which know where in the window the
object is; or ``"roi"``, the ROI features of a proposal (:func:`midlevel_fast.features.roi.box_features`), which only
the ROI detector (:class:`midlevel_fast.model.detector.RoiDetector`) reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# What a head's own regression of its windows reads; the ROI detector's reads "roi".
WINDOW_FEATURES: tuple[str, ...] = ("mid-level", "layout")
REGRESSION_FEATURES: tuple[str, ...] = (*WINDOW_FEATURES, "roi")


@dataclass(eq=False)
class BoxRegression:
    """Per-class linear box regression (module docstring); ``description`` says how it was fitted (e.g.
    ``ridge``, ``splits``, ``images``, ``rows`` per class)."""

    weight: torch.Tensor
    bias: torch.Tensor
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weight.ndim != 3 or self.weight.shape[1] != 4 or self.bias.shape != self.weight.shape[:2]:
            raise ValueError(f"box regression weight must be (C, 4, F) and bias (C, 4), got "
                             f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}")
        self.weight, self.bias = self.weight.float(), self.bias.float()
        if self.features not in REGRESSION_FEATURES:
            raise ValueError(f"box regression features must be one of {REGRESSION_FEATURES}, got {self.features!r}")

    def __eq__(self, other: object) -> bool:
        # Tensors compare element-wise; two regressions are equal when their weights, biases and records are.
        return (isinstance(other, BoxRegression) and torch.equal(self.weight, other.weight)
                and torch.equal(self.bias, other.bias) and self.description == other.description)

    @property
    def features(self) -> str:
        """What the regression reads, one of :data:`REGRESSION_FEATURES` (module docstring)."""
        return self.description.get("features", "mid-level")

    @property
    def num_classes(self) -> int:
        """The classes it regresses boxes for."""
        return self.weight.shape[0]

    @property
    def feature_dim(self) -> int:
        """The length of the mid-level vectors it reads."""
        return self.weight.shape[2]

    def deltas(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(N, 4)`` float32 deltas of ``features (N, F)`` for the classes ``labels (N,)`` (int64), row by row."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim or labels.shape != (len(features),):
            raise ValueError(f"features must be (N, {self.feature_dim}) with labels (N,), got "
                             f"{tuple(features.shape)} and {tuple(labels.shape)}")
        f = features.float().to(self.weight.device)
        out = torch.empty(len(f), 4, device=f.device)
        # One matrix product per class present among the rows, not a (N, 4, F) gather of weights.
        for c in torch.unique(labels).tolist():
            rows = labels == c
            out[rows] = f[rows] @ self.weight[c].t() + self.bias[c]
        return out
