"""The conventions and argument checks of :func:`~midlevel_fast.ops.aggregate.power_mean` and
:func:`~midlevel_fast.ops.aggregate.output_maps`, shared by the dispatcher and the backends.

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates; pixel ``(y, x)`` is covered by a box
when its centre ``(x + 0.5, y + 0.5)`` lies in ``[x0, x1) × [y0, y1)`` (:func:`covered_range`).
"""
from __future__ import annotations

import torch

from midlevel_fast.ops.backends import backends

BACKENDS: tuple[str, ...] = ("torch", "triton")


def check_backend(backend: str) -> None:
    """Raises ``ValueError`` for an unknown ``backend``, ``RuntimeError`` saying why for an unavailable one."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        status = backends()["triton"]
        if not status.available:
            raise RuntimeError(f"backend='triton' is unavailable: {status.detail}")


def check_power_mean(probs: torch.Tensor, k: float) -> None:
    """Raises ``ValueError`` unless ``probs`` is a non-empty ``(M, C)`` tensor and ``k > 0``."""
    if probs.ndim != 2:
        raise ValueError(f"probs must be (M, C), got shape {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        raise ValueError("probs has no patches to aggregate")
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k}")


def check_output_maps(boxes: torch.Tensor, probs: torch.Tensor) -> None:
    """Raises ``ValueError`` unless ``boxes`` is ``(M, 4)`` and ``probs`` ``(M, C)``."""
    if boxes.ndim != 2 or boxes.shape[1] != 4 or probs.ndim != 2 or probs.shape[0] != boxes.shape[0]:
        raise ValueError(f"need boxes (M, 4) and probs (M, C), got {tuple(boxes.shape)} and {tuple(probs.shape)}")


def covered_range(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last pixel index whose centre lies in ``[lo, hi)``, clipped to ``[0, n]``."""
    first = torch.ceil(lo - 0.5).clamp(0, n).long()
    last = torch.ceil(hi - 0.5).clamp(0, n).long()
    return first, torch.maximum(first, last)
