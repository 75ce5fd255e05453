"""Pooling the window probabilities of an image into one probability per class, for learning from image-level
labels (:mod:`midlevel_fast.training.weak`; Oquab, Bottou, Laptev and Sivic, "Is object localization for free?",
CVPR 2015).

For one image with windows ``n = 1..N`` and class probabilities ``p_n`` (the head's softmax with background, or
its per-class sigmoids):

* ``"max"``: ``max_n p_n``, the 2015 paper's global max pooling. Only the best window of each class learns;
* ``"power-mean"``: ``(1/N Σ_n p_n^k)^(1/k)`` (default ``k = 5``), the generalised mean of the image score of
  Oquab et al. 2014 (``1/N Σ p^k``, a monotone function of it, so both rank images alike). Between the mean
  (``k = 1``) and the max (``k → ∞``): every window learns, the likely ones most;
* ``"log-sum-exp"``: ``1/r log(1/N Σ_n exp(r p_n))`` (default ``r = 10``), the smooth maximum of Pinheiro and
  Collobert (CVPR 2015) taken on the probabilities, also between the mean and the max.

Each pooled value lies in ``[0, 1]``. Computed from log-probabilities: the power mean as ``(logsumexp(k log p) −
log N) / k``, which neither underflows (``p^5`` of a softmax probability of 1e-10 is below float32's range) nor
has an infinite gradient at ``p = 0``; log-sum-exp as ``log1p(1/N Σ expm1(r p)) / r``, exact to rounding even
where every ``p`` is far below 1. Images have different window counts: they come padded to ``(B, N, C)`` with
a ``(B, N)`` mask of the real windows.
"""
from __future__ import annotations

import math

import torch

POOLINGS: tuple[str, ...] = ("max", "power-mean", "log-sum-exp")
DEFAULT_POWER = 5.0
DEFAULT_SHARPNESS = 10.0
# exp(r) must fit in float32.
MAX_SHARPNESS = 80.0


def pool_windows(log_probs: torch.Tensor, mask: torch.Tensor, pooling: str, k: float = DEFAULT_POWER,
                 r: float = DEFAULT_SHARPNESS) -> torch.Tensor:
    """The logarithm of each image's pooled probability per class (see the module docstring): ``(B, C)`` from
    ``log_probs (B, N, C)`` (``log p``, ``-inf`` allowed) and ``mask (B, N)`` bool (``True`` for a real window;
    every image needs one). Differentiable in ``log_probs``."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if log_probs.ndim != 3 or mask.shape != log_probs.shape[:2]:
        raise ValueError(f"need log_probs (B, N, C) and mask (B, N), got {tuple(log_probs.shape)} and "
                         f"{tuple(mask.shape)}")
    counts = mask.sum(dim=1, keepdim=True).to(log_probs.dtype)
    if not bool((counts > 0).all()):
        raise ValueError("every image needs at least one window")
    real = mask[:, :, None]
    if pooling == "max":
        return log_probs.masked_fill(~real, -math.inf).amax(dim=1)
    if pooling == "power-mean":
        if not k > 0:
            raise ValueError(f"the power mean needs k > 0, got {k}")
        return (torch.logsumexp((k * log_probs).masked_fill(~real, -math.inf), dim=1) - counts.log()) / k
    if not 0 < r <= MAX_SHARPNESS:
        raise ValueError(f"log-sum-exp pooling needs 0 < r <= {MAX_SHARPNESS}, got {r}")
    # log(1 + mean(exp(r p) - 1)) keeps its relative precision for p near 0, where log(mean(exp(r p))) rounds to 0.
    mean = (torch.expm1(r * log_probs.exp()) * real).sum(dim=1) / counts
    # 0 only when every window is exactly 0.
    return (torch.log1p(mean) / r).clamp(min=torch.finfo(mean.dtype).tiny, max=1.0).log()
