"""Presence calibration the slow, obvious way: Platt scaling by plain gradient descent, isotonic regression by
trying every partition into blocks, calibration error and Brier score by loops over the pairs."""
from __future__ import annotations

import itertools
import math

import numpy as np


def platt_gradient_descent(x, positives, steps: int = 200_000) -> tuple[float, float]:
    """``(a, b)`` minimising ``Σ log(1 + e^z) − t·z``, ``z = a·x + b``, with Platt's targets
    ``(N+ + 1)/(N+ + 2)`` and ``1/(N- + 2)``: fixed-step gradient descent on the standardised score (step
    ``1/L`` with ``L`` the gradient's Lipschitz bound), mapped back to ``x`` at the end."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    mu, sd = x.mean(), x.std() or 1.0
    u = (x - mu) / sd
    design = np.stack([u, np.ones_like(u)], axis=1)
    lipschitz = 0.25 * np.linalg.eigvalsh(design.T @ design / len(u)).max()
    w = np.zeros(2)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(design @ w)))
        grad = design.T @ (p - t) / len(u)
        if np.abs(grad).max() < 1e-13:
            break
        w -= grad / lipschitz
    a = w[0] / sd
    return float(a), float(w[1] - a * mu)


def platt_loss(x, positives, a: float, b: float) -> float:
    """The objective of :func:`platt_gradient_descent` at ``(a, b)``, summed over the pairs."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    t = np.where(y, (y.sum() + 1) / (y.sum() + 2), 1 / ((~y).sum() + 2))
    return float(sum(math.log1p(math.exp(a * xi + b)) - ti * (a * xi + b) for xi, ti in zip(x, t)))


def isotonic_brute_force(y, weights=None) -> np.ndarray:
    """The non-decreasing fit minimising ``Σ w (y − f)²``: every partition of the sequence into contiguous blocks,
    each block at its weighted mean, the best of those whose means do not decrease."""
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    best, best_cost = None, math.inf
    for cuts in itertools.product([False, True], repeat=len(y) - 1):
        bounds = [0] + [i + 1 for i, cut in enumerate(cuts) if cut] + [len(y)]
        means = [float(np.sum(w[s:e] * y[s:e]) / np.sum(w[s:e])) for s, e in zip(bounds, bounds[1:])]
        if any(m2 < m1 - 1e-12 for m1, m2 in zip(means, means[1:])):
            continue
        fit = np.concatenate([np.full(e - s, m) for m, s, e in zip(means, bounds, bounds[1:])])
        cost = float(np.sum(w * (y - fit) ** 2))
        # A plain comparison: an absolute margin here kept the first feasible partition whenever every cost is
        # below the margin (y = [0, 1.2e-7] got the pooled fit instead of y itself, cost 7e-15 against 0). The
        # objective is strictly convex, so fits of nearly equal cost are nearly equal fits.
        if cost < best_cost:
            best, best_cost = fit, cost
    return best


def ece_loop(probs, positives, bins: int = 15) -> float:
    """Expected calibration error of the pairs ``(probs[i], positives[i])``: bin ``j`` holds
    ``j/bins <= p < (j+1)/bins`` (``p = 1`` in the last); ``Σ_j n_j/n |mean label − mean p|``."""
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, p in enumerate(probs):
        j = next(j for j in range(bins) if j / bins <= p < (j + 1) / bins) if p < 1 else bins - 1
        members[j].append(i)
    total = 0.0
    for idx in members:
        if idx:
            conf = sum(float(probs[i]) for i in idx) / len(idx)
            freq = sum(float(positives[i]) for i in idx) / len(idx)
            total += len(idx) / len(probs) * abs(freq - conf)
    return total


def brier_loop(probs, positives) -> float:
    """``mean (p − label)²`` over the pairs."""
    return sum((float(p) - float(y)) ** 2 for p, y in zip(probs, positives)) / len(probs)
