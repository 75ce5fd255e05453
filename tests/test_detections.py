"""Detections (midlevel_fast/scoring/detections.py): NMS against the exact loop (hypothesis), R-CNN box coding,
and detect's candidates, regression, clipping and cap."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast.model.box_regression import BoxRegression
from midlevel_fast.scoring.detections import (Detection, batched_nms, decode_boxes, detect, encode_boxes, nms,
                                              pairwise_iou)
from tests.oracle.detections import iou_exact, nms_reference


@st.composite
def scored_boxes(draw, max_n: int = 30):
    """Integer boxes on a small canvas (so that many overlap and IoU is exact), scores with ties."""
    n = draw(st.integers(0, max_n))
    boxes, scores, labels = [], [], []
    for _ in range(n):
        x0, y0 = draw(st.integers(0, 20)), draw(st.integers(0, 20))
        boxes.append([x0, y0, x0 + draw(st.integers(1, 12)), y0 + draw(st.integers(1, 12))])
        scores.append(draw(st.integers(0, 8)) / 8)  # few values: ties are common
        labels.append(draw(st.integers(0, 2)))
    return boxes, scores, labels


@settings(max_examples=200, deadline=None)
@given(scored_boxes(), st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_matches_the_exact_loop(data, iou):
    boxes, scores, _ = data
    kept = nms(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores), iou)
    assert kept.tolist() == nms_reference(boxes, scores, iou)


@settings(max_examples=200, deadline=None)
@given(scored_boxes(), st.sampled_from([0.3, 0.5]))
def test_batched_nms_never_suppresses_across_labels(data, iou):
    boxes, scores, labels = data
    kept = batched_nms(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores),
                       torch.tensor(labels, dtype=torch.int64), iou)
    assert kept.tolist() == nms_reference(boxes, scores, iou, labels)


@settings(max_examples=100, deadline=None)
@given(scored_boxes(max_n=8))
def test_pairwise_iou_is_exact_on_integer_boxes(data):
    boxes = data[0]
    if not boxes:
        return
    got = pairwise_iou(torch.tensor(boxes, dtype=torch.float64), torch.tensor(boxes, dtype=torch.float64))
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes):
            assert got[i, j].item() == pytest.approx(float(iou_exact(a, b)), abs=1e-15)


def test_nms_hand_made():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.]])
    scores = torch.tensor([0.9, 0.95, 0.5, 0.9])
    # IoU(box1, box0) = 90/110 > 0.5: box 1 (best) suppresses 0 and 3; box 2 is alone.
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 0, 2], "box 3 equals box 0 (IoU 1): suppressed even at 0.95"
    assert nms(torch.zeros(0, 4), torch.zeros(0)).tolist() == []


def test_nms_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        nms(torch.zeros(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="iou must be in"):
        nms(torch.zeros(1, 4), torch.zeros(1), 1.5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 400), st.floats(0, 400), st.floats(8, 300), st.floats(8, 300),
                          st.floats(0, 400), st.floats(0, 400), st.floats(2, 300), st.floats(2, 300)),
                min_size=1, max_size=10))
def test_encode_then_decode_gives_the_target(rows):
    # Sides change by at most 300/8 = 37.5x, inside decode_boxes' clamp (62.5x).
    win = torch.tensor([[a, b, a + c, b + d] for a, b, c, d, *_ in rows], dtype=torch.float64)
    tgt = torch.tensor([[e, f, e + g, f + h] for *_, e, f, g, h in rows], dtype=torch.float64)
    deltas = encode_boxes(win, tgt)
    assert torch.allclose(decode_boxes(win.float(), deltas.float()).double(), tgt, rtol=1e-4, atol=1e-2)


def test_decode_moves_and_scales_by_the_window_size():
    win = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # w 20, h 40, centre (20, 40)
    out = decode_boxes(win, torch.tensor([[0.5, -0.25, math.log(2), 0.0]]))
    assert out.tolist() == [[10.0, 10.0, 50.0, 50.0]]  # centre (30, 30), w 40, h 40


def test_decode_clamps_wild_scales():
    out = decode_boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.0, 1e4, 1e4]]))
    assert torch.isfinite(out).all()


def test_detect_thresholds_suppresses_and_orders():
    windows = torch.tensor([[0, 0, 50, 50], [2, 0, 52, 50], [100, 100, 150, 150.]])
    probs = torch.tensor([[0.9, 0.01], [0.8, 0.6], [0.04, 0.3]])
    dets = detect(windows, probs, ["cat", "dog"], (200, 200))
    assert dets == [Detection("cat", pytest.approx(0.9), (0.0, 0.0, 50.0, 50.0)),
                    Detection("dog", pytest.approx(0.6), (2.0, 0.0, 52.0, 50.0)),
                    Detection("dog", pytest.approx(0.3), (100.0, 100.0, 150.0, 150.0))]
    assert [d.label for d in detect(windows, probs, ["cat", "dog"], (200, 200), max_per_image=1)] == ["cat"]
    assert detect(windows, probs, ["cat", "dog"], (200, 200), threshold=0.95) == []


def test_detect_regresses_then_clips_to_the_image():
    windows = torch.tensor([[0, 0, 100, 100.], [50, 50, 150, 150.]])
    probs = torch.tensor([[0.9], [0.2]])
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Feature 0 shrinks the box to half its size; feature 1 moves it right by half a width (partly out of the image).
    weight = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [math.log(0.5), 0.0], [math.log(0.5), 0.0]]])
    weight[0, 0, 1] = 0.5
    reg = BoxRegression(weight, torch.zeros(1, 4))
    dets = detect(windows, probs, ["cat"], (120, 120), feats, reg)
    assert dets[0].box == pytest.approx((25.0, 25.0, 75.0, 75.0))
    assert dets[1].box == pytest.approx((100.0, 50.0, 120.0, 120.0)), "moved to x 100..200, clipped at 120"


def test_detect_drops_boxes_clipped_to_nothing():
    reg = BoxRegression(torch.zeros(1, 4, 1), torch.tensor([[5.0, 0.0, 0.0, 0.0]]))
    assert detect(torch.tensor([[0, 0, 10, 10.]]), torch.tensor([[0.9]]), ["cat"], (20, 20),
                  torch.zeros(1, 1), reg) == []


def test_detect_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="probs must be"):
        detect(torch.zeros(2, 4), torch.zeros(3, 1), ["cat"], (10, 10))
    with pytest.raises(ValueError, match="box regression needs"):
        detect(torch.zeros(2, 4), torch.zeros(2, 1), ["cat"], (10, 10), None,
               BoxRegression(torch.zeros(1, 4, 3), torch.zeros(1, 4)))


def test_score_image_detections_are_detect_on_its_windows():
    from midlevel_fast import load_model, score_image
    from midlevel_fast.features.patch_features import patch_features
    from tests.helpers import skimage_photo
    model = load_model()
    if model.info.box_regression is None:
        pytest.skip("this build ships no head with a box regression")
    img = skimage_photo("chelsea")[::2, ::2].copy()  # 150x226: quick
    res = score_image(img, model, precision="fp32", detection_threshold=0.3)
    with torch.inference_mode():
        feats, boxes, _ = patch_features(model.regression_backbone(), img, "dense", model.info.scales,
                                         model.info.grid_step)
    expected = detect(boxes, res.probs, model.class_names, res.image_size, feats, model.info.box_regression,
                      threshold=0.3)
    assert res.detections == expected and res.detections, "the cat photo has detections"
    assert res.detections[0].label == "cat"
    assert all(0 <= d.box[0] < d.box[2] <= 226 and 0 <= d.box[1] < d.box[3] <= 150 for d in res.detections)


@settings(max_examples=100, deadline=None)
@given(scored_boxes(max_n=40), st.sampled_from([0.0, 0.5, 1.0]), st.integers(1, 7), st.integers(1, 20))
def test_blockwise_nms_matches_the_exact_loop_across_blocks(data, iou, block, chunk):
    """Blocks and chunks far smaller than the box count (duplicated boxes, tied scores) keep the loop's set."""
    import midlevel_fast.scoring.detections as det
    boxes, scores, labels = data
    boxes, scores, labels = boxes + boxes[:5], scores + scores[:5], labels + labels[:5]
    saved = det._NMS_BLOCK, det._NMS_CHUNK
    det._NMS_BLOCK, det._NMS_CHUNK = block, chunk
    try:
        kept = batched_nms(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores),
                           torch.tensor(labels, dtype=torch.int64), iou)
    finally:
        det._NMS_BLOCK, det._NMS_CHUNK = saved
    assert kept.tolist() == nms_reference(boxes, scores, iou, labels)


def test_batched_nms_of_31k_boxes_fits_in_1_gib():
    """Every window of 20 classes (detection_threshold=0 on a quick-start-sized scene) in a subprocess whose
    address space is capped 1 GiB above what torch and the inputs take; an N×N IoU matrix would need ~8 GB."""
    import subprocess
    import sys
    code = """
import resource, torch
from midlevel_fast.scoring.detections import batched_nms
g = torch.Generator().manual_seed(0)
xy = torch.rand(31000, 2, generator=g) * 400
wh = 20 + torch.rand(31000, 2, generator=g) * 300
boxes = torch.cat([xy, xy + wh], 1)
scores = torch.rand(31000, generator=g)
labels = torch.arange(31000) % 20
with open('/proc/self/statm') as f:
    vsz = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vsz + 2**30, resource.RLIM_INFINITY))
print(len(batched_nms(boxes, scores, labels, 0.5)))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) > 0
