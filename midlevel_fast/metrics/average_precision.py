"""VOC classification metrics: average precision per class, mAP and a printable table.

Average precision follows the devkit's ``VOCevalcls.m``: images are ranked by decreasing score (a stable sort,
as MATLAB's ``sort``, so tied images keep their input order); images ignored for the class (only difficult
objects) are removed first, which gives the same precision/recall points as the devkit, where they count as
neither true nor false positives; then, with ``rec = tp / n_pos`` and ``prec = tp / (tp + fp)`` at each rank:

* ``"voc2007"``: 11-point interpolated AP, ``mean over t ∈ {0, 0.1, …, 1} of max(prec[rec ≥ t])`` (0 when no
  rank reaches ``t``). The thresholds are the exact tenths ``t/10``; the devkit's accumulated ``0:0.1:1`` can
  sit one ulp above a tenth and miss a recall of exactly 0.3.
* ``"voc2010"`` (VOC2010 and later, ``VOCap.m``): area under the precision envelope, ``Σ (r_i − r_{i−1})·p̂_i``
  over the points where recall changes, with ``p̂`` the running maximum of precision from the right and the
  curve padded with ``(0, 0)`` and ``(1, 0)``.

A class with no positive image has no defined AP: it is ``NaN`` and left out of the mAP.
"""
from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np

Method = Literal["voc2010", "voc2007"]
METHODS: tuple[Method, ...] = ("voc2010", "voc2007")


def _true_positives(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Cumulative true positives at ranks 1..N, images ranked by decreasing score, ties in input order."""
    return np.cumsum(positives[np.argsort(-scores, kind="stable")])


def average_precision(
    scores: np.ndarray | Sequence[float],
    positives: np.ndarray | Sequence[bool],
    ignore: np.ndarray | Sequence[bool] | None = None,
    method: Method = "voc2010",
) -> float:
    """AP of one class over ``N`` images: ``scores (N,)`` float, ``positives (N,)`` bool, ``ignore (N,)`` bool
    (default none). See the module docstring for both methods. ``NaN`` when no non-ignored image is positive."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = np.asarray(positives, dtype=bool).reshape(-1)
    ign = np.zeros_like(pos) if ignore is None else np.asarray(ignore, dtype=bool).reshape(-1)
    if not (len(s) == len(pos) == len(ign)):
        raise ValueError(f"scores, positives and ignore need the same length, got {len(s)}, {len(pos)}, {len(ign)}")
    if not np.isfinite(s[~ign]).all():
        raise ValueError("scores contain NaN or infinity")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (pos & ~ign).any():
        return float("nan")
    tp = _true_positives(s[~ign], pos[~ign])
    return ranked_average_precision(tp, int(tp[-1]), method)


def ranked_average_precision(tp: np.ndarray, n_pos: int, method: Method = "voc2010") -> float:
    """AP of a ranking from its cumulative true positives ``tp`` at ranks 1..N (int) and the number of positives
    ``n_pos`` (which may exceed ``tp[-1]``: positives never ranked, e.g. objects no detection found), by either
    method of the module docstring. Shared by image classification and detection (``detection_ap``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_pos <= 0:
        return float("nan")
    if not len(tp):
        return 0.0
    prec = tp / np.arange(1, len(tp) + 1)
    if method == "voc2007":
        # rec >= t/10 decided on integers (tp * 10 >= t * n_pos), free of rounding.
        return float(sum(prec[tp * 10 >= t * n_pos].max(initial=0.0) for t in range(11)) / 11)
    rec = tp / n_pos
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changed = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changed] - mrec[changed - 1]) * mpre[changed]))


def mean_average_precision(
    scores: np.ndarray,
    positives: np.ndarray,
    ignore: np.ndarray | None = None,
    method: Method = "voc2010",
) -> tuple[np.ndarray, float]:
    """Per-class AP ``(C,)`` float64 and their mean for ``scores``, ``positives``, ``ignore`` of shape ``(N, C)``.

    Classes without positives (``NaN`` AP) are left out of the mean; the mean is ``NaN`` if no class has one.
    """
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positives, dtype=bool)
    ign = np.zeros_like(pos) if ignore is None else np.asarray(ignore, dtype=bool)
    if s.ndim != 2 or s.shape != pos.shape or s.shape != ign.shape:
        raise ValueError(f"scores, positives and ignore must all be (N, C), got {s.shape}, {pos.shape}, {ign.shape}")
    per_class = np.array([average_precision(s[:, c], pos[:, c], ign[:, c], method) for c in range(s.shape[1])])
    return per_class, _nanmean(per_class)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def format_ap_table(class_names: Sequence[str], rows: Mapping[str, np.ndarray | Sequence[float]]) -> str:
    """Fixed-width table: one line per entry of ``rows`` (a method or ablation, its per-class AP in ``[0, 1]``),
    one column per class plus ``mAP``, values in % with one decimal, ``-`` for ``NaN``. The mAP is the mean over
    the classes with a defined AP, as :func:`mean_average_precision`."""
    names = list(class_names)
    widths = [max(5, len(n)) for n in names] + [5]
    label_width = max([len("method")] + [len(k) for k in rows])

    def line(label: str, cells: Sequence[str]) -> str:
        return " ".join([label.ljust(label_width)] + [c.rjust(w) for c, w in zip(cells, widths)])

    out = [line("method", names + ["mAP"])]
    out.append("-" * len(out[0]))
    for label, values in rows.items():
        ap = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(ap) != len(names):
            raise ValueError(f"row {label!r} has {len(ap)} values for {len(names)} classes")
        cells = ["-" if np.isnan(v) else f"{100 * v:.1f}" for v in [*ap, _nanmean(ap)]]
        out.append(line(label, cells))
    return "\n".join(out)
