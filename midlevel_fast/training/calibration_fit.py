"""Fitting the presence calibration (:mod:`midlevel_fast.model.presence`) on (score, label) pairs, per class.

* Platt scaling (Platt 1999, with the Newton method of Lin, Lin & Weng 2007): ``p = sigmoid(a·x + b)`` on
  ``x = log score``, by maximum likelihood against Platt's smoothed targets ``t+ = (N+ + 1)/(N+ + 2)`` for the
  positives and ``t- = 1/(N- + 2)`` for the negatives, i.e. minimising ``Σ softplus(z) − t·z`` with
  ``z = a·x + b``. The targets keep the optimum finite even when the classes are separable.
* Isotonic regression: the non-decreasing fit of the 0/1 labels minimising the squared error, by
  pool-adjacent-violators over the pairs sorted by score (tied scores pooled first); stored as knots at both ends
  of every pooled block and interpolated linearly in ``x`` between them.

Pairs marked ``ignore`` (images with only difficult objects of the class) take no part. A class whose fit data
have no positive or no negative gets the prior rule instead: the constant ``(N+ + 1)/(N + 2)`` (Laplace's rule of
succession; ``a = 0`` for Platt), and is listed in the description's ``fallback``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from midlevel_fast.model.presence import CALIBRATION_METHODS, Calibration, log_score

# Newton's stopping rule: gradient norm below this (per pair), or this many steps.
NEWTON_TOLERANCE = 1e-10
NEWTON_STEPS = 100


def fit_platt(x: np.ndarray, positives: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of Platt scaling on the log scores ``x (N,)`` with labels ``positives (N,)`` (both classes
    present), by Newton's method with a backtracking line search; float64."""
    x = np.asarray(x, dtype=np.float64)
    pos = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    t = np.where(pos, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    design = np.stack([x, np.ones_like(x)], axis=1)

    def loss(w: np.ndarray) -> float:
        z = design @ w
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    w = np.array([0.0, np.log((n_pos + 1) / (n_neg + 1))])  # Platt's start: the smoothed prior
    value = loss(w)
    for _ in range(NEWTON_STEPS):
        p = 1 / (1 + np.exp(-(design @ w)))
        grad = design.T @ (p - t)
        if np.linalg.norm(grad) < NEWTON_TOLERANCE * len(x):
            break
        # A tiny ridge keeps the Hessian invertible when every pair sits at p = 0 or 1 (Lin et al.'s sigma).
        hess = (design.T * (p * (1 - p))) @ design + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while size > 1e-10:
            trial = w - size * step
            trial_value = loss(trial)
            if trial_value < value + 1e-4 * size * (grad @ -step):
                break
            size /= 2
        else:
            break  # no descent left at machine precision
        w, value = trial, trial_value
    return float(w[0]), float(w[1])


def pool_adjacent_violators(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence minimising ``Σ weights·(y − fit)²``, for ``y (n,)`` already in the order of
    the inputs; float64 ``(n,)``."""
    values: list[float] = []
    mass: list[float] = []
    sizes: list[int] = []
    for v, m in zip(np.asarray(y, dtype=np.float64), np.asarray(weights, dtype=np.float64)):
        values.append(float(v))
        mass.append(float(m))
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            v_last, m_last, s_last = values.pop(), mass.pop(), sizes.pop()
            values[-1] = (values[-1] * mass[-1] + v_last * m_last) / (mass[-1] + m_last)
            mass[-1] += m_last
            sizes[-1] += s_last
    return np.repeat(values, sizes)


def fit_isotonic(x: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Knots ``(L, 2)`` float64 ``(x, presence)`` of the isotonic fit of ``positives (N,)`` on ``x (N,)``, L >= 2."""
    distinct, inverse, counts = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    mean_label = np.bincount(inverse, weights=np.asarray(positives, dtype=np.float64)) / counts
    fitted = pool_adjacent_violators(mean_label, counts)
    # Keep the first and last distinct score of every pooled block: the rest lie on the line between them.
    edge = np.ones(len(fitted), dtype=bool)
    edge[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    knots = np.stack([distinct[edge], fitted[edge]], axis=1)
    return knots if len(knots) > 1 else np.repeat(knots, 2, axis=0)


def _prior_knots(x: np.ndarray, prior: float) -> np.ndarray:
    low, high = (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
    return np.array([[low, prior], [high, prior]])


def fit_calibration(scores: torch.Tensor | np.ndarray, positives: torch.Tensor | np.ndarray,
                    ignore: torch.Tensor | np.ndarray | None, method: str, k: float, class_names: Sequence[str],
                    description: dict[str, Any] | None = None) -> Calibration:
    """A :class:`~midlevel_fast.model.presence.Calibration` of ``method`` fitted per class on power-mean
    ``scores (N, C)`` with labels ``positives (N, C)`` (``ignore (N, C)``: pairs left out, default none), for
    scores of exponent ``k``. ``description`` is stored with it, completed with ``method``, ``images`` and
    ``fallback`` (the names, from ``class_names``, of the classes fitted by the prior rule)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    s = torch.as_tensor(scores, dtype=torch.float64).cpu()
    pos = torch.as_tensor(positives, dtype=torch.bool).cpu()
    ign = torch.zeros_like(pos) if ignore is None else torch.as_tensor(ignore, dtype=torch.bool).cpu()
    if s.ndim != 2 or s.shape != pos.shape or s.shape != ign.shape or s.shape[1] != len(class_names):
        raise ValueError(f"scores, positives and ignore must all be (N, C) with C = {len(class_names)} classes, got "
                         f"{tuple(s.shape)}, {tuple(pos.shape)}, {tuple(ign.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError("scores must be finite and >= 0")
    x_all = log_score(s).numpy()
    fits, fallback = [], []
    for c in range(s.shape[1]):
        keep = ~ign[:, c].numpy()
        x, y = x_all[keep, c], pos[:, c].numpy()[keep]
        n_pos = int(y.sum())
        if 0 < n_pos < len(y):
            fits.append(fit_platt(x, y) if method == "platt" else fit_isotonic(x, y))
            continue
        fallback.append(class_names[c])
        prior = (n_pos + 1) / (len(y) + 2)
        fits.append((0.0, float(np.log(prior / (1 - prior)))) if method == "platt" else _prior_knots(x, prior))
    if method == "platt":
        parameters = torch.tensor(fits, dtype=torch.float64)
    else:
        length = max(len(f) for f in fits)
        parameters = torch.from_numpy(np.stack([np.concatenate([f, np.repeat(f[-1:], length - len(f), 0)])
                                                for f in fits]))
    info = {**(description or {}), "method": method, "images": int(s.shape[0]), "fallback": fallback}
    return Calibration(method, parameters, float(k), s, pos, ign, info)
