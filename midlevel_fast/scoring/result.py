"""The result of scoring one image: :class:`ScoreResult`.

Convention: boxes (``windows``, detection boxes) are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the
(EXIF-oriented) image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """One JSON-ready record of the result (plain Python types): what ``midlevel-fast score --json`` prints
        per image and ``score-dir`` writes per row, each adding keys of its own (the image or path, the map
        files, the settings).

        ``{"width", "height", "mode", "k", "patches", "classes", "detections", "seconds"}``: the image size in
        pixels; how it was scored; ``patches`` the number of windows averaged (``len(windows)``); ``classes``
        the ``top`` best classes by score (every class for ``None``), best first (equal scores in class order),
        each ``{"class", "score", "presence", "point"}`` with ``presence`` ``None`` without calibration and
        ``point`` ``[x, y]`` in image pixels, ``None`` for a class without a map; ``detections`` ``[{"class",
        "score", "box": [x0, y0, x1, y1]}, ...]`` (image pixels) best first; ``seconds`` the wall time. Points and
        boxes are rounded to 0.01 pixel, ``seconds`` to 0.1 ms; scores and presences are the float32 values.

        Why this shape: one object per class holds everything known about it (read in one place, not matched
        across parallel lists), classes that share a name (ImageNet's two "crane") stay two entries, and the keys
        are the same whatever the head (a Parquet table gets fixed columns, not one per class name). The windows
        and their probabilities (thousands of rows) stay out: they are for the Python API.
        """
        n = len(self.class_names) if top is None else top
        order = torch.sort(self.scores, descending=True, stable=True).indices[:n].tolist()
        points = {c: [round(float(v), 2) for v in p] for c, p in self.points.items()}
        classes = [{"class": self.class_names[i], "score": float(self.scores[i]),
                    "presence": None if self.presence is None else float(self.presence[i]),
                    "point": points.get(self.class_names[i])} for i in order]
        return {"width": self.image_size[1], "height": self.image_size[0], "mode": self.mode, "k": float(self.k),
                "patches": len(self.windows), "classes": classes,
                "detections": [{"class": d.label, "score": float(d.score), "box": [round(float(v), 2) for v in d.box]}
                               for d in self.detections],
                "seconds": round(self.seconds, 4)}

    def detection_tensors(self) -> dict[str, torch.Tensor]:
        """``detections`` as the dict of tensors that torchvision's detection models return per image and
        ``torchmetrics.detection.MeanAveragePrecision.update`` takes as each of its ``preds``: ``{"boxes": (N, 4)
        float32 (x0, y0, x1, y1) image pixels, "labels": (N,) int64 indices into class_names, "scores": (N,)
        float32}``, best first as ``detections``. (Not "targets": both libraries call the ground truth so.)

        A detection names its class, so a name that two classes share (ImageNet's two "crane") gives the index of
        the first.
        """
        index: dict[str, int] = {}
        for i, name in enumerate(self.class_names):
            index.setdefault(name, i)
        return {"boxes": torch.tensor([d.box for d in self.detections], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([index[d.label] for d in self.detections], dtype=torch.int64),
                "scores": torch.tensor([d.score for d in self.detections], dtype=torch.float32)}

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
