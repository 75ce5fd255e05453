"""torchvision.ops as a second oracle for the box geometry of midlevel_fast.scoring.detections,
midlevel_fast.training.labels and midlevel_fast.features.roi_align: ``nms``, ``batched_nms``, pairwise IoU, R-CNN's
box coding and ROI align.

Relations (all exact up to float64 rounding):
* IoU: ``pairwise_iou`` and ``labels.box_iou`` equal ``torchvision.ops.box_iou`` on positive-area boxes in
  continuous coordinates (no devkit +1 in either).
* NMS: both keep a box when its IoU with every kept, better-scored box is at most ``iou`` (torchvision discards
  ``IoU > iou_threshold``), and return the kept indices best score first. torchvision's sort is not stable, so
  tied scores may come out in another order: the cases here have distinct scores.
* Box coding: torchvision's ``BoxCoder`` with weights (1, 1, 1, 1) is R-CNN's parametrisation, as ours; its
  decode clamps ``dw, dh`` at ``log(1000 / 16)``, our ``MAX_LOG_SCALE``.
* ROI align: equal to ``torchvision.ops.roi_align(spatial_scale=1)`` with the same ``sampling_ratio`` (0:
  adaptive) and ``aligned``, up to float32 summation order (1e-5), on boxes partly outside, degenerate or larger
  than the map.

torchvision needs the torch build it was compiled for, so it is not a [test] dependency: CI runs this module in a
venv of its own (.ci/run, "library oracles that need torchvision"); elsewhere it skips, saying why.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast.features.roi_align import roi_align
from midlevel_fast.scoring.detections import MAX_LOG_SCALE, batched_nms, decode_boxes, encode_boxes, nms, pairwise_iou
from midlevel_fast.training.labels import box_iou

try:
    import torchvision.ops
    from torchvision.models.detection._utils import BoxCoder
except Exception as error:  # an ImportError, or a RuntimeError from a torchvision built for another torch
    pytest.skip(f"torchvision not importable: {error}", allow_module_level=True)


@st.composite
def boxes_with_scores(draw, max_n: int = 60):
    """float64 boxes on a small canvas (many overlap), distinct scores in a random order, labels 0..3."""
    n = draw(st.integers(0, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 40
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 20 + 0.5
    scores = torch.randperm(n, generator=g).double() / max(n, 1)
    labels = torch.randint(0, 4, (n,), generator=g)
    return torch.cat([xy, xy + wh], dim=1), scores, labels


@settings(max_examples=80, deadline=None)
@given(case=boxes_with_scores(), iou=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_equals_torchvision(case, iou):
    boxes, scores, _ = case
    assert torch.equal(nms(boxes, scores, iou), torchvision.ops.nms(boxes, scores, iou))


@settings(max_examples=80, deadline=None)
@given(case=boxes_with_scores(), iou=st.sampled_from([0.3, 0.5, 0.7]))
def test_batched_nms_equals_torchvision(case, iou):
    boxes, scores, labels = case
    assert torch.equal(batched_nms(boxes, scores, labels, iou), torchvision.ops.batched_nms(boxes, scores, labels, iou))


def test_batched_nms_equals_torchvision_above_its_per_class_size():
    """torchvision switches to one suppression per class above 4,000 boxes (CPU): the same kept set there too."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(6000, 2, generator=g, dtype=torch.float64) * 400
    boxes = torch.cat([xy, xy + torch.rand(6000, 2, generator=g, dtype=torch.float64) * 100 + 1], dim=1)
    scores, labels = torch.randperm(6000, generator=g).double(), torch.randint(0, 20, (6000,), generator=g)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5), torchvision.ops.batched_nms(boxes, scores, labels, 0.5))


@settings(max_examples=80, deadline=None)
@given(a=boxes_with_scores(max_n=20), b=boxes_with_scores(max_n=20))
def test_box_iou_equals_torchvision(a, b):
    want = torchvision.ops.box_iou(a[0], b[0])
    torch.testing.assert_close(pairwise_iou(a[0], b[0]), want, rtol=0, atol=1e-12)
    if len(a[0]) and len(b[0]):
        torch.testing.assert_close(box_iou(a[0], b[0]), want, rtol=0, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(windows=boxes_with_scores(max_n=20), targets=boxes_with_scores(max_n=20))
def test_box_coding_equals_torchvision_box_coder(windows, targets):
    n = min(len(windows[0]), len(targets[0]))
    w, t = windows[0][:n], targets[0][:n]
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=MAX_LOG_SCALE)
    deltas = encode_boxes(w, t)
    torch.testing.assert_close(deltas, coder.encode_single(t, w), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(decode_boxes(w, deltas).double(), coder.decode_single(deltas, w), rtol=1e-5, atol=1e-4)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), height=st.integers(1, 12), width=st.integers(1, 12), n=st.integers(0, 30),
       output=st.tuples(st.integers(1, 7), st.integers(1, 7)), sampling_ratio=st.integers(0, 3),
       aligned=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_roi_align_equals_torchvision(seed, height, width, n, output, sampling_ratio, aligned, dtype):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(2, 3, height, width, generator=g, dtype=dtype)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([width + 4.0, height + 4.0], dtype=dtype) - 2
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 1.5 * max(height, width)
    wh = torch.where(torch.rand(n, 2, generator=g) < 0.1, torch.zeros_like(wh), wh)
    boxes, batch_index = torch.cat([xy, xy + wh], dim=1), torch.randint(0, 2, (n,), generator=g)
    want = torchvision.ops.roi_align(maps, torch.cat([batch_index[:, None].to(dtype), boxes], dim=1), output,
                                     spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=aligned)
    got = roi_align(maps, boxes, batch_index, output, sampling_ratio, aligned)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
