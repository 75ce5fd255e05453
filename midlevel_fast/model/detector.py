"""The ROI detector: a detection scorer of its own beside the paper's patch head, trained with detection labels
on ROI features of proposals (:mod:`midlevel_fast.training.detector_fit`) and applied by
:func:`midlevel_fast.scoring.roi_detections.roi_detections`.

Convention:

* features: :func:`midlevel_fast.features.roi.box_features` of a box under :attr:`RoiDetector.roi`, ``F`` floats
  (:func:`midlevel_fast.features.roi.roi_feature_dim`);
* scores: a linear softmax, ``logits = features @ weight.T + bias`` with ``weight (C+1, F)`` and ``bias (C+1,)``
  float32 (any standardisation of the features folded in); column 0 is the background, column ``c + 1`` the head's
  reported class ``c``;
* boxes: R-CNN's per-class box regression on the same features
  (:class:`midlevel_fast.model.box_regression.BoxRegression` with ``features == "roi"``), applied ``steps`` times,
  the features re-pooled at each regressed box; ``steps = 0`` keeps the proposals;
* the proposals: :func:`midlevel_fast.features.proposals.dense_proposals` under :attr:`RoiDetector.proposals`.

Stored in the head file (:func:`midlevel_fast.model.head.save_head`) as the tensors ``detector.weight``,
``detector.bias`` and, with a regression, ``detector.regression.weight`` / ``.bias``, and the JSON metadata
``detector`` (:meth:`RoiDetector.metadata`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from midlevel_fast.features.proposals import ProposalConfig
from midlevel_fast.features.roi import RoiConfig
from midlevel_fast.model.box_regression import BoxRegression

# Per class, at most this many proposals (the best) go on to regression and NMS: bounds the re-pooling's cost.
CANDIDATES_PER_CLASS = 50
CANDIDATE_MIN = 0.01
NMS_IOU = 0.3
VOTING_IOU = 0.5


@dataclass(eq=False)
class RoiDetector:
    """A trained ROI detector (module docstring). ``candidate_min`` is the class probability a proposal needs
    to be a candidate of that class (R-CNN's and Fast R-CNN's evaluation threshold, lower than any reporting
    threshold, since a regressed box is re-scored); ``nms_iou`` the per-class NMS threshold; ``voting_iou`` box
    voting's (each box kept by NMS becomes the score-weighted mean of its class's candidates at IoU >= it with the
    kept box; ``None``: no voting); ``description`` how it was trained."""

    weight: torch.Tensor
    bias: torch.Tensor
    regression: BoxRegression | None
    proposals: ProposalConfig
    roi: RoiConfig
    steps: int = 2
    candidate_min: float = CANDIDATE_MIN
    candidates_per_class: int = CANDIDATES_PER_CLASS
    nms_iou: float = NMS_IOU
    voting_iou: float | None = VOTING_IOU
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.shape != (len(self.weight),) or len(self.weight) < 2:
            raise ValueError(f"detector weight must be (C+1, F) with C >= 1 and bias (C+1,), got "
                             f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}")
        self.weight, self.bias = self.weight.float(), self.bias.float()
        if self.regression is not None and (self.regression.features != "roi"
                                            or self.regression.num_classes != self.num_classes
                                            or self.regression.feature_dim != self.feature_dim):
            raise ValueError(f"the detector's box regression must read its {self.feature_dim} ROI features for "
                             f"{self.num_classes} classes, got {self.regression.num_classes} classes of "
                             f"{self.regression.feature_dim} {self.regression.features!r} features")
        if self.steps < 0 or (self.steps and self.regression is None):
            raise ValueError(f"steps must be >= 0, and 0 without a box regression; got {self.steps}")
        if not 0 <= self.candidate_min <= 1 or self.candidates_per_class < 1 or not 0 <= self.nms_iou <= 1:
            raise ValueError("need candidate_min and nms_iou in [0, 1] and candidates_per_class >= 1, got "
                             f"{self.candidate_min}, {self.nms_iou}, {self.candidates_per_class}")
        if self.voting_iou is not None and not 0 < self.voting_iou <= 1:
            raise ValueError(f"voting_iou must be in (0, 1] or None, got {self.voting_iou}")

    @property
    def num_classes(self) -> int:
        """``C``: the object classes (the background not counted)."""
        return len(self.weight) - 1

    @property
    def feature_dim(self) -> int:
        """``F``: the ROI features it reads."""
        return self.weight.shape[1]

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` float32 class probabilities of ``features (N, F)`` (the softmax's background column
        dropped), on the features' device."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"features must be (N, {self.feature_dim}), got {tuple(features.shape)}")
        w, b = self.weight.to(features.device), self.bias.to(features.device)
        return torch.softmax(features.float() @ w.t() + b, dim=1)[:, 1:]

    def metadata(self) -> dict[str, Any]:
        """The JSON-able settings stored in the head file beside the tensors."""
        return {"proposals": asdict(self.proposals), "roi": asdict(self.roi), "steps": self.steps,
                "candidate_min": self.candidate_min, "candidates_per_class": self.candidates_per_class,
                "nms_iou": self.nms_iou, "voting_iou": self.voting_iou, "description": self.description,
                "regression": None if self.regression is None else self.regression.description}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors stored in the head file, by their names there (module docstring)."""
        out = {"weight": self.weight, "bias": self.bias}
        if self.regression is not None:
            out.update({"regression.weight": self.regression.weight, "regression.bias": self.regression.bias})
        return out

    @classmethod
    def from_stored(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> RoiDetector:
        """The detector of :meth:`metadata` and :meth:`tensors` as read back from a head file."""
        regression = None
        if meta["regression"] is not None:
            regression = BoxRegression(tensors["regression.weight"], tensors["regression.bias"], meta["regression"])
        p, r = meta["proposals"], meta["roi"]
        return cls(tensors["weight"], tensors["bias"], regression,
                   ProposalConfig(tuple(p["scales"]), tuple(p["aspect_ratios"]), p["step_divisor"]),
                   RoiConfig(r["layout"], r["context"], r.get("whole_image", False), r["sampling_ratio"]),
                   meta["steps"], meta["candidate_min"],
                   meta["candidates_per_class"], meta["nms_iou"], meta["voting_iou"], meta["description"])
