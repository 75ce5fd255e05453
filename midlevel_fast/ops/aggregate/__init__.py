"""From patch probabilities to image scores and output maps (Oquab et al., section 3.3 and figure 5).

Convention: see :mod:`midlevel_fast.ops.aggregate.schema` (a pixel is covered by a box when its centre lies in
it). Backends: ``"torch"`` (float64 power mean on any device, prefix-sum maps on the CPU) and ``"triton"`` (one
fused launch on CUDA tensors, float32 accumulation; :mod:`midlevel_fast.ops.aggregate.triton`).
"""
from __future__ import annotations

import torch

from midlevel_fast.ops.aggregate.schema import BACKENDS, check_backend, check_output_maps, check_power_mean
from midlevel_fast.ops.aggregate.torch_backend import coverage_sums, output_maps_torch, power_mean_torch

__all__ = ["BACKENDS", "output_maps", "power_mean", "window_sums"]


def power_mean(probs: torch.Tensor, k: float = 5.0, backend: str = "torch") -> torch.Tensor:
    """Image score per class: ``score(C) = 1/M Σ_i y(C|P_i)^k`` over the ``M`` rows of ``probs (M, C)``.

    ``k = 1`` is the mean; large ``k`` approaches the max (the paper uses ``k = 5``). Returns ``(C,)`` in the
    dtype of ``probs``; an empty ``probs`` raises ``ValueError``. ``backend``: ``"torch"`` (float64, any device)
    or ``"triton"`` (CUDA tensors, float32 accumulation).
    """
    check_power_mean(probs, k)
    check_backend(backend)
    if backend == "triton":
        # Deferred: triton is an optional dependency, slow to import.
        from midlevel_fast.ops.aggregate.triton import aggregate_triton

        scores = aggregate_triton(probs, k=float(k))[0]
        if scores is None:
            raise RuntimeError("aggregate_triton computed no scores although k was given")
        return scores.to(probs.dtype)
    return power_mean_torch(probs, k)


def output_maps(boxes: torch.Tensor, probs: torch.Tensor, height: int, width: int,
                backend: str = "torch") -> torch.Tensor:
    """``(C, height, width)`` float32 maps: per pixel, the mean probability of the patches covering it (0 where
    none does). ``boxes (M, 4)``, ``probs (M, C)``. ``backend="torch"`` returns them on the CPU, ``"triton"`` on
    ``probs``' CUDA device.
    """
    check_output_maps(boxes, probs)
    check_backend(backend)
    if backend == "triton":
        # Deferred: triton is an optional dependency, slow to import.
        from midlevel_fast.ops.aggregate.triton import aggregate_triton

        maps = aggregate_triton(probs, boxes=boxes, height=height, width=width)[1]
        if maps is None:
            raise RuntimeError("aggregate_triton computed no maps although boxes were given")
        return maps
    return output_maps_torch(boxes, probs, height, width)


def window_sums(boxes: torch.Tensor, probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(C, height, width)`` float32 on the CPU: per pixel, the *sum* of the probabilities of the patches
    covering it (:func:`output_maps` is the same sum over their number). ``boxes (M, 4)``, ``probs (M, C)``."""
    check_output_maps(boxes, probs)
    return coverage_sums(boxes, probs, height, width)[0].float()
