"""Non-maximum suppression on window-like boxes: the blockwise ``nms``/``batched_nms`` of
:mod:`midlevel_fast.scoring.detections` against the one-matrix loop they replaced
(:func:`benchmarks.baselines.nms_one_matrix`), in the same run.

Run: ``pytest benchmarks/bench_nms.py --benchmark-only`` (under a minute on 2 cores). The 31k-box case is
``score_image(..., detection_threshold=0)`` on the quick start's scene: 1,547 windows × 20 classes, which the
one-matrix loop cannot run there (two 7.7 GB matrices); it is timed for the blockwise code alone.
"""
from __future__ import annotations

import pytest
import torch

from midlevel_fast.scoring.detections import NMS_IOU, batched_nms, nms

from .baselines import nms_one_matrix


def windows(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` square windows of 4 scales on a 500×375 image, as the dense grid gives them, and random scores."""
    g = torch.Generator().manual_seed(seed)
    side = torch.tensor([94.0, 125.0, 188.0, 375.0])[torch.randint(0, 4, (n,), generator=g)]
    x0 = torch.rand(n, generator=g, dtype=torch.float64) * (500 - side)
    y0 = torch.rand(n, generator=g, dtype=torch.float64) * (375 - side)
    return torch.stack([x0, y0, x0 + side, y0 + side], 1).float(), torch.rand(n, generator=g)


@pytest.mark.parametrize("n", [1547, 5000])
@pytest.mark.parametrize("variant", ["one matrix", "blockwise"])
def test_nms(benchmark, n, variant):
    boxes, scores = windows(n)
    run = nms_one_matrix if variant == "one matrix" else nms
    benchmark.group = f"nms {n} boxes"
    kept = benchmark.pedantic(run, args=(boxes, scores, NMS_IOU), rounds=5, warmup_rounds=1)
    assert torch.equal(kept, nms(boxes, scores, NMS_IOU))  # the same kept set and order as the blockwise nms
    benchmark.extra_info.update(kept=len(kept), baseline=variant == "one matrix")


def test_batched_nms_every_window_of_every_class(benchmark):
    boxes, scores = windows(1547)
    boxes, scores = boxes.repeat(20, 1), torch.rand(20 * 1547, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(20).repeat_interleave(1547)
    benchmark.group = "batched_nms 31k boxes, 20 classes"
    kept = benchmark.pedantic(batched_nms, args=(boxes, scores, labels, NMS_IOU), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(kept=len(kept))
