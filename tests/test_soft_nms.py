"""Soft-NMS (midlevel_fast/scoring/soft_nms.py): the paper's Algorithm 1 as a plain loop (hypothesis; bit for bit
for the linear and hard decays, whose arithmetic has no exp), the hard decay against nms, hand-made cases of each
decay, ties, the per-label version and the argument checks."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast.scoring.detections import batched_nms, nms
from midlevel_fast.scoring.soft_nms import batched_soft_nms, soft_nms
from tests.oracle.soft_nms import soft_nms_reference


@st.composite
def scored_boxes(draw, max_n: int = 25, tied: bool = True):
    """Integer boxes on a small canvas (many overlap, IoU exact up to its one division); scores from eight values
    (ties common) or continuous ones; labels 0..2."""
    n = draw(st.integers(0, max_n))
    boxes, scores, labels = [], [], []
    for _ in range(n):
        x0, y0 = draw(st.integers(0, 16)), draw(st.integers(0, 16))
        boxes.append([x0, y0, x0 + draw(st.integers(1, 12)), y0 + draw(st.integers(1, 12))])
        scores.append(draw(st.integers(1, 8)) / 8 if tied else draw(st.floats(0.01, 1.0)))
        labels.append(draw(st.integers(0, 2)))
    return boxes, scores, labels


def run(boxes, scores, labels=None, **kw):
    b, s = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), torch.tensor(scores, dtype=torch.float64)
    if labels is None:
        keep, new = soft_nms(b, s, **kw)
    else:
        keep, new = batched_soft_nms(b, s, torch.tensor(labels, dtype=torch.int64), **kw)
    return keep.tolist(), new.tolist()


@settings(max_examples=200, deadline=None)
@given(scored_boxes(), st.sampled_from(["linear", "hard"]), st.sampled_from([0.0, 0.3, 0.5]),
       st.sampled_from([0.0, 0.001, 0.2]))
def test_linear_and_hard_match_the_loop_bit_for_bit(data, method, iou, threshold):
    boxes, scores, labels = data
    kw = {"method": method, "iou": iou, "score_threshold": threshold}
    assert run(boxes, scores, **kw) == soft_nms_reference(boxes, scores, **kw)
    assert run(boxes, scores, labels, **kw) == soft_nms_reference(boxes, scores, labels=labels, **kw)


@settings(max_examples=200, deadline=None)
@given(scored_boxes(tied=False), st.sampled_from([0.1, 0.5, 2.0]), st.sampled_from([0.001, 0.3]))
def test_gaussian_matches_the_loop(data, sigma, threshold):
    # torch's vectorised exp and math.exp may differ in the last bit: continuous scores keep the order clear of
    # such near-ties, and the scores agree to 1e-12.
    boxes, scores, labels = data
    kw = {"method": "gaussian", "sigma": sigma, "score_threshold": threshold}
    for got, ref in ((run(boxes, scores, **kw), soft_nms_reference(boxes, scores, **kw)),
                     (run(boxes, scores, labels, **kw), soft_nms_reference(boxes, scores, labels=labels, **kw))):
        assert got[0] == ref[0]
        assert got[1] == pytest.approx(ref[1], rel=1e-12, abs=0)


@settings(max_examples=200, deadline=None)
@given(scored_boxes(), st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_hard_decay_is_nms(data, iou):
    boxes, scores, labels = data
    b, s = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores)
    keep, new = soft_nms(b, s, method="hard", iou=iou)
    assert keep.tolist() == nms(b, s, iou).tolist()
    assert torch.equal(new, s[keep]), "boxes nms keeps are never decayed"
    lab = torch.tensor(labels, dtype=torch.int64)
    assert batched_soft_nms(b, s, lab, method="hard", iou=iou)[0].tolist() == batched_nms(b, s, lab, iou).tolist()


def test_each_decay_by_hand():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 2]]  # IoU with box 0: 0.5, 0, 0.2
    scores = [0.9, 0.8, 0.7, 0.6]
    # box 1 is decayed by box 0 (IoU 0.5) and then by box 3 (IoU 20/50 = 0.4)
    assert run(boxes, scores, method="linear", iou=0.3) == ([0, 2, 3, 1], [0.9, 0.7, 0.6, 0.8 * 0.5 * (1 - 0.4)])
    assert run(boxes, scores, method="linear", iou=0.5) == ([0, 1, 2, 3], scores), "IoU 0.5 is not > 0.5"
    # every box decays: box 3 by box 0 (IoU 0.2) to 0.55 and box 1 by box 0 (IoU 0.5) to 0.49, then by box 3
    keep, new = run(boxes, scores, method="gaussian", sigma=0.5)
    assert keep == [0, 2, 3, 1]
    assert new == pytest.approx([0.9, 0.7, 0.6 * math.exp(-0.04 / 0.5),
                                 0.8 * math.exp(-0.25 / 0.5) * math.exp(-0.16 / 0.5)], rel=1e-15)
    assert run(boxes, scores, method="hard", iou=0.3) == ([0, 2, 3], [0.9, 0.7, 0.6])
    assert run(boxes, scores, method="linear", iou=0.3, score_threshold=0.5) == ([0, 2, 3], [0.9, 0.7, 0.6])
    low = run(boxes, [0.9, 0.8, 0.0005, 0.6], method="linear")
    assert low == ([0, 3, 1], [0.9, 0.6, 0.8 * 0.5 * (1 - 0.4)]), "box 2 is below 0.001 from the start"


def test_ties_keep_the_input_order():
    far = [[0, 0, 1, 1], [10, 10, 11, 11], [20, 20, 21, 21], [30, 30, 31, 31]]
    assert run(far, [0.5, 0.9, 0.5, 0.9], method="gaussian")[0] == [1, 3, 0, 2]
    same = [[0, 0, 10, 10]] * 3  # IoU 1: the linear decay zeroes the copies of the first
    assert run(same, [0.5, 0.5, 0.5], method="linear") == ([0], [0.5])
    keep, new = run(same, [0.5, 0.5, 0.5], method="linear", score_threshold=0.0)
    assert keep == [0, 1, 2] and new == [0.5, 0.0, 0.0], "threshold 0 keeps every box, rescored"


def test_dtypes_and_empty_input():
    keep, new = soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert keep.dtype == torch.int64 and new.dtype == torch.float32 and len(keep) == len(new) == 0
    keep, new = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0, dtype=torch.float16), torch.zeros(0))
    assert keep.dtype == torch.int64 and new.dtype == torch.float16 and len(keep) == 0
    assert soft_nms(torch.tensor([[0, 0, 1, 1.]]), torch.tensor([1]))[1].dtype == torch.float64


@pytest.mark.parametrize(
    "boxes, scores, kw, match",
    [
        (torch.zeros(3, 5), torch.zeros(3), {}, r"boxes must be \(N, 4\)"),
        (torch.zeros(1, 4), torch.zeros(1), {"iou": 1.5}, "iou must be in"),
        (torch.zeros(1, 4), torch.zeros(1), {"method": "cubic"}, "method must be"),
        (torch.zeros(1, 4), torch.zeros(1), {"sigma": 0.0}, "sigma > 0"),
        (torch.zeros(1, 4), torch.zeros(1), {"score_threshold": -1.0}, "score_threshold >= 0"),
        (torch.zeros(1, 4), torch.tensor([-0.5]), {}, "scores must be finite and >= 0"),
        (torch.zeros(1, 4), torch.tensor([float("nan")]), {}, "scores must be finite and >= 0"),
    ],
)
def test_bad_arguments_are_refused(boxes, scores, kw, match):
    with pytest.raises(ValueError, match=match):
        soft_nms(boxes, scores, **kw)
    with pytest.raises(ValueError, match=match):
        batched_soft_nms(boxes, scores, torch.zeros(len(boxes), dtype=torch.int64), **kw)


def test_batched_refuses_mismatched_labels():
    with pytest.raises(ValueError, match=r"labels must be \(N,\)"):
        batched_soft_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(3, dtype=torch.int64))
