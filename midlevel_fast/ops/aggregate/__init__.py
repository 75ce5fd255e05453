"""From patch probabilities to image scores and output maps (Oquab et al., section 3.3 and figure 5).

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates; pixel ``(y, x)`` is covered by a box
when its centre ``(x + 0.5, y + 0.5)`` lies in ``[x0, x1) × [y0, y1)``.
"""
from __future__ import annotations

import torch


IMPLS: tuple[str, ...] = ("torch", "triton")


def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "triton":
        from midlevel_fast.ops.backends import backends

        status = backends()["triton"]
        if not status.available:
            raise RuntimeError(f"impl='triton' is unavailable: {status.detail}")


def power_mean(probs: torch.Tensor, k: float = 5.0, impl: str = "torch") -> torch.Tensor:
    """Image score per class: ``score(C) = 1/M Σ_i y(C|P_i)^k`` over the ``M`` rows of ``probs (M, C)``.

    ``k = 1`` is the mean; large ``k`` approaches the max (the paper uses ``k = 5``). Returns ``(C,)`` in the
    dtype of ``probs``; an empty ``probs`` raises ``ValueError``. ``impl``: ``"torch"`` (float64, any device) or
    ``"triton"`` (the fused kernel of :mod:`midlevel_fast.ops.aggregate.triton`, float32 accumulation, on CUDA
    tensors).
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be (M, C), got shape {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        raise ValueError("probs has no patches to aggregate")
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k}")
    _check_impl(impl)
    if impl == "triton":
        from midlevel_fast.ops.aggregate.triton import aggregate_triton

        return aggregate_triton(probs, k=float(k))[0].to(probs.dtype)
    return probs.double().pow(k).mean(dim=0).to(probs.dtype)


def covered_range(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last pixel index whose centre lies in ``[lo, hi)``, clipped to ``[0, n]``."""
    first = torch.ceil(lo - 0.5).clamp(0, n).long()
    last = torch.ceil(hi - 0.5).clamp(0, n).long()
    return first, torch.maximum(first, last)


def output_maps(boxes: torch.Tensor, probs: torch.Tensor, height: int, width: int,
                impl: str = "torch") -> torch.Tensor:
    """``(C, height, width)`` float32 maps: per pixel, the mean probability of the patches covering it (0 where
    none does). ``boxes (M, 4)``, ``probs (M, C)``.

    ``impl="torch"`` runs in ``O(M·C + C·H·W)`` on the CPU: every box adds its probabilities at the corners of a
    difference image, whose 2-D prefix sum is the per-pixel total; the same trick counts the coverage.
    ``impl="triton"`` runs the fused tile kernel of :mod:`midlevel_fast.ops.aggregate.triton` on ``probs``' CUDA
    device (float32 accumulation) and returns the maps there.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or probs.ndim != 2 or probs.shape[0] != boxes.shape[0]:
        raise ValueError(f"need boxes (M, 4) and probs (M, C), got {tuple(boxes.shape)} and {tuple(probs.shape)}")
    _check_impl(impl)
    if impl == "triton":
        from midlevel_fast.ops.aggregate.triton import aggregate_triton

        return aggregate_triton(probs, boxes=boxes, height=height, width=width)[1]
    b = boxes.double().cpu()
    x0, x1 = covered_range(b[:, 0], b[:, 2], width)
    y0, y1 = covered_range(b[:, 1], b[:, 3], height)
    c = probs.shape[1]
    values = torch.cat([probs.double().cpu(), torch.ones(len(b), 1, dtype=torch.float64)], dim=1)  # + coverage
    diff = torch.zeros(c + 1, (height + 1) * (width + 1), dtype=torch.float64)
    for ys, xs, sign in ((y0, x0, 1.0), (y0, x1, -1.0), (y1, x0, -1.0), (y1, x1, 1.0)):
        diff.index_add_(1, ys * (width + 1) + xs, values.t() * sign)
    total = diff.view(c + 1, height + 1, width + 1).cumsum(1).cumsum(2)[:, :height, :width]
    count = total[c]
    maps = torch.where(count > 0.5, total[:c] / count.clamp(min=1.0), torch.zeros_like(total[:c]))
    return maps.float()
