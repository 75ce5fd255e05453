"""The result of scoring one image: :class:`ScoreResult`.

Convention: boxes (``windows``, detection boxes) are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the
(EXIF-oriented) image.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from midlevel_fast.scoring.detections import Detection


@dataclass(frozen=True)
class ScoreResult:
    """Scores of one image, complete when a scoring function returns it (frozen).

    Attributes:
        class_names: the reported classes (background excluded).
        scores: ``(C,)`` float32 power-mean scores.
        windows: ``(M, 4)`` float32 boxes of the ``M`` windows (dense mode) or patches (batched, naive) whose
            probabilities ``scores`` averages, in image coordinates: what was looked at, not what was found (that
            is ``detections``).
        probs: ``(M, C)`` float32 class probabilities of each window, for the reported classes.
        scale_index: ``(M,)`` int64 index of each window's scale.
        image_size: ``(height, width)`` of the image.
        mode, k: how the scores were computed.
        maps: ``(len(map_classes), H, W)`` float32 output maps when asked for, else ``None``.
        map_classes: the classes of ``maps``, in order.
        points: ``{class: (x, y)}`` in image pixels for the classes of ``maps``, empty without maps: where the
            windows showing the class pile up (:func:`midlevel_fast.scoring.points.window_points`: the maximum of
            the per-pixel *sum* of the covering windows' probabilities, which points better than the maximum of
            ``maps``, their mean; ties broken by the centroid of the largest maximal region).
        seconds: wall time of the call.
        presence: ``(C,)`` float32 probability that each class is present (:mod:`midlevel_fast.model.presence`),
            ``None`` when the head has no calibration for this ``k``.
        detections: the objects found (:class:`midlevel_fast.scoring.detections.Detection`: label, score, box),
            best first (:func:`midlevel_fast.scoring.detections.detect`); empty in mode ``"naive"``.
    """

    class_names: list[str]
    scores: torch.Tensor
    windows: torch.Tensor
    probs: torch.Tensor
    scale_index: torch.Tensor
    image_size: tuple[int, int]
    mode: str
    k: float
    maps: torch.Tensor | None = None
    map_classes: list[str] = field(default_factory=list)
    points: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0
    presence: torch.Tensor | None = None
    detections: list[Detection] = field(default_factory=list)

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` best classes as ``(name, score)``, best first."""
        values, idx = torch.topk(self.scores, min(n, len(self.class_names)))
        return [(self.class_names[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]

    def present(self, threshold: float = 0.5) -> list[tuple[str, float]]:
        """The classes whose presence is at least ``threshold``, as ``(name, probability)``, most probable first
        (ties in class order). Raises ``ValueError`` when there are no presence probabilities."""
        if self.presence is None:
            raise ValueError("no presence probabilities: the head has no calibration for k = "
                             f"{self.k:g}; calibrate it with `midlevel-fast calibrate --voc ROOT --head HEAD --split "
                             "val --out HEAD_OUT` (or --cross-fit) and score with the new head file")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        values, idx = torch.sort(self.presence, descending=True, stable=True)
        return [(self.class_names[i], float(v)) for v, i in zip(values.tolist(), idx.tolist()) if v >= threshold]
