"""How well presence probabilities match how often classes are present: expected calibration error, Brier score and
reliability-diagram data, per class and overall.

Conventions: ``probs`` and ``positives`` are ``(N, C)`` (image, class) pairs, ``ignore (N, C)`` marks pairs left
out (images with only difficult objects of the class, as in AP). "Overall" pools every kept pair of every class.

* Bins: ``bins`` equal-width intervals of ``[0, 1]``, bin ``i`` holding ``i/bins <= p < (i+1)/bins``, the last one
  closed (``p = 1`` is in it).
* Expected calibration error: ``Σ_bins (n_b / n) · |mean label_b − mean p_b|`` over the non-empty bins (15 bins
  by default, as in Guo et al. 2017), for the binary event "the class is present".
* Brier score: ``mean (p − label)²``.

A class with no kept pair has ``NaN`` for both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ECE_BINS = 15
# probs, positives and ignore: torch tensors or numpy arrays.
Pairs = torch.Tensor | np.ndarray


@dataclass
class ReliabilityBins:
    """Reliability-diagram data: per bin, ``counts (B,)`` int64, ``confidence (B,)`` (mean probability) and
    ``frequency (B,)`` (fraction present) float64 (``NaN`` for an empty bin), and the ``edges (B + 1,)``."""

    counts: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray
    edges: np.ndarray


def _arrays(probs: Pairs, positives: Pairs, ignore: Pairs | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = torch.as_tensor(probs).double().cpu().numpy()
    pos = torch.as_tensor(positives).bool().cpu().numpy()
    keep = ~(np.zeros_like(pos) if ignore is None else torch.as_tensor(ignore).bool().cpu().numpy())
    if p.shape != pos.shape or p.shape != keep.shape or p.ndim != 2:
        raise ValueError(f"probs, positives and ignore must all be (N, C), got {p.shape}, {pos.shape}, {keep.shape}")
    if not (np.isfinite(p[keep]).all() and (p[keep] >= 0).all() and (p[keep] <= 1).all()):
        raise ValueError("probs must be probabilities in [0, 1]")
    return p, pos, keep


def reliability_bins(probs: Pairs, positives: Pairs, ignore: Pairs | None = None, bins: int = ECE_BINS
                     ) -> ReliabilityBins:
    """:class:`ReliabilityBins` of all kept pairs of ``probs``/``positives``/``ignore`` (module conventions)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p, pos, keep = _arrays(probs, positives, ignore)
    return _bins(p[keep], pos[keep], bins)


def _bins(p: np.ndarray, positives: np.ndarray, bins: int) -> ReliabilityBins:
    edges = np.arange(bins + 1) / bins
    # The number of inner edges at or below p is its bin; p = 1 lands in the last one.
    index = np.searchsorted(edges[1:-1], p, side="right")
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=bins) / counts
        frequency = np.bincount(index, weights=positives.astype(np.float64), minlength=bins) / counts
    return ReliabilityBins(counts, confidence, frequency, edges)


def _ece(p: np.ndarray, positives: np.ndarray, bins: int) -> float:
    if not len(p):
        return float("nan")
    b = _bins(p, positives, bins)
    full = b.counts > 0
    return float(np.sum(b.counts[full] * np.abs(b.frequency[full] - b.confidence[full])) / len(p))


def expected_calibration_error(probs: Pairs, positives: Pairs, ignore: Pairs | None = None, bins: int = ECE_BINS
                               ) -> tuple[np.ndarray, float]:
    """Per-class ECE ``(C,)`` float64 and the overall ECE of the pooled pairs (module conventions)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p, pos, keep = _arrays(probs, positives, ignore)
    per_class = np.array([_ece(p[keep[:, c], c], pos[keep[:, c], c], bins) for c in range(p.shape[1])])
    return per_class, _ece(p[keep], pos[keep], bins)


def brier_score(probs: Pairs, positives: Pairs, ignore: Pairs | None = None) -> tuple[np.ndarray, float]:
    """Per-class Brier score ``(C,)`` float64 and the overall one of the pooled pairs (module conventions)."""
    p, pos, keep = _arrays(probs, positives, ignore)
    squared = np.where(keep, (p - pos) ** 2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = squared.sum(axis=0) / keep.sum(axis=0)
    overall = float(squared.sum() / keep.sum()) if keep.any() else float("nan")
    return per_class, overall
