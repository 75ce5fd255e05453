"""Presence: the probability that a class is in the image, from its power-mean score and a per-class calibration.

The calibration is a monotone map of ``x = log(max(score, SCORE_FLOOR))`` per class, fitted on (score, label)
pairs of images the head did not see (:mod:`midlevel_fast.recipes.calibrate`) and stored in the head file:

* ``"platt"`` (Platt scaling): ``presence = sigmoid(a·x + b)``; ``parameters`` is ``(C, 2)`` float64 ``[a, b]``;
* ``"isotonic"`` (pool-adjacent-violators): a non-decreasing piecewise-linear function of ``x`` through knots,
  constant beyond the first and last; ``parameters`` is ``(C, L, 2)`` float64 knots ``(x, presence)`` sorted by
  ``x``, a class with fewer knots padded by repeating its last one.

Scores below :data:`SCORE_FLOOR` all count as the floor: float32 scores underflow near 1e-38 while the fit data are
float64, and a score that small means "absent" either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

CALIBRATION_METHODS: tuple[str, ...] = ("platt", "isotonic")
SCORE_FLOOR = 1e-30


@dataclass(eq=False)
class Calibration:
    """A per-class presence calibration and the data it was fitted on.

    Attributes:
        method: one of :data:`CALIBRATION_METHODS`.
        parameters: float64, ``(C, 2)`` for ``"platt"``, ``(C, L, 2)`` for ``"isotonic"`` (module docstring).
        k: the power-mean exponent of the scores it was fitted on (it does not apply to scores of another ``k``).
        scores: ``(N, C)`` float64 power-mean scores of the ``N`` fit images.
        positives, ignore: ``(N, C)`` bool labels of the fit images; ignored pairs (only difficult objects of the
            class) took no part in the fit.
        description: how the fit data were made, e.g. ``source`` ("held-out" or "cross-fit"), ``splits``,
            ``images``, ``folds``, ``mode``, ``image_ids``, and ``fallback`` (classes fitted by the prior rule).
    """

    method: str
    parameters: torch.Tensor
    k: float
    scores: torch.Tensor
    positives: torch.Tensor
    ignore: torch.Tensor
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {self.method!r}")
        if self.scores.ndim != 2 or self.scores.shape[1] < 1:
            raise ValueError(f"calibration scores must be (N, C) with C >= 1, got {tuple(self.scores.shape)}")
        shape, c = tuple(self.parameters.shape), self.scores.shape[1]
        platt_ok = self.method == "platt" and shape == (c, 2)
        isotonic_ok = self.method == "isotonic" and len(shape) == 3 and shape[0] == c and shape[1] >= 2 == shape[2]
        if not (platt_ok or isotonic_ok):
            want = "(C, 2)" if self.method == "platt" else "(C, L >= 2, 2)"
            raise ValueError(f"{self.method} calibration parameters must be {want} with C = {c}, got {shape}")
        if self.positives.shape != self.scores.shape or self.ignore.shape != self.scores.shape:
            raise ValueError(f"positives {tuple(self.positives.shape)} and ignore {tuple(self.ignore.shape)} must have "
                             f"the shape of scores {tuple(self.scores.shape)}")

    @property
    def num_classes(self) -> int:
        """Classes it calibrates (columns of ``scores``)."""
        return self.scores.shape[1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return (self.method == other.method and self.k == other.k and self.description == other.description
                and all(torch.equal(getattr(self, n), getattr(other, n))
                        for n in ("parameters", "scores", "positives", "ignore")))


def log_score(scores: torch.Tensor) -> torch.Tensor:
    """``log(max(scores, SCORE_FLOOR))`` in float64: the calibration's input, for scores of any shape."""
    return scores.double().clamp(min=SCORE_FLOOR).log()


def platt_presence(x: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
    """``sigmoid(a·x + b)`` per class: ``x (..., C)`` log scores, ``parameters (C, 2)``; float64."""
    return torch.sigmoid(x * parameters[:, 0] + parameters[:, 1])


def isotonic_presence(x: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear interpolation through ``knots (C, L, 2)`` at ``x (..., C)``, constant outside; float64."""
    flat = x.reshape(-1, x.shape[-1]).t().contiguous()  # (C, n)
    kx, ky = knots[..., 0].contiguous(), knots[..., 1]
    # Knot j is the last one at or left of x; a padded (repeated) knot never lies strictly right of x.
    right = torch.searchsorted(kx, flat, right=True).clamp(1, kx.shape[1] - 1)
    x0, x1 = kx.gather(1, right - 1), kx.gather(1, right)
    y0, y1 = ky.gather(1, right - 1), ky.gather(1, right)
    t = ((flat - x0) / (x1 - x0).clamp(min=1e-300)).clamp(0, 1)
    return (y0 + t * (y1 - y0)).t().reshape(x.shape)


def presence_probabilities(scores: torch.Tensor, calibration: Calibration) -> torch.Tensor:
    """Presence probabilities ``(..., C)`` float32 of power-mean ``scores (..., C)`` (any float dtype)."""
    if scores.shape[-1] != calibration.num_classes:
        raise ValueError(f"scores have {scores.shape[-1]} classes, the calibration {calibration.num_classes}")
    x = log_score(scores.cpu())
    if calibration.method == "platt":
        return platt_presence(x, calibration.parameters).float()
    return isotonic_presence(x, calibration.parameters).float()


def presence_for(scores: torch.Tensor, calibration: Calibration | None, k: float) -> torch.Tensor | None:
    """:func:`presence_probabilities` when there is a calibration fitted for this ``k``, else ``None``."""
    if calibration is None or float(calibration.k) != float(k):
        return None
    return presence_probabilities(scores, calibration)
