"""VOC detection AP (midlevel_fast/metrics/detection_ap.py): a hand-worked example, the devkit's rules for
difficult and duplicate boxes, and random cases against the line-by-line transcription of VOCevaldet.m."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast.scoring.detections import Detection
from midlevel_fast.metrics.detection_ap import GroundTruth, detection_ap
from tests.oracle.detections import voc_det_ap_reference

CAT = (10.0, 10.0, 50.0, 50.0)


def gt(boxes, difficult=None, label="cat"):
    return GroundTruth(np.array(boxes, dtype=np.float64).reshape(-1, 4), [label] * len(boxes),
                       np.array(difficult or [False] * len(boxes)))


def test_hand_worked_example():
    truth = [gt([CAT, (100, 100, 150, 150)], [False, True]), gt([CAT])]
    dets = [[Detection("cat", 0.9, CAT),                     # TP
             Detection("cat", 0.8, (11, 10, 50, 50)),        # duplicate of the same box: FP
             Detection("cat", 0.7, (100, 100, 150, 150))],   # on the difficult box: ignored
            [Detection("cat", 0.6, (12, 12, 50, 50)),        # TP (IoU 0.9)
             Detection("cat", 0.5, (200, 200, 220, 220))]]   # nothing there: FP
    # Counted ranks: TP, FP, TP, FP -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1 (2 positives).
    ap, mean = detection_ap(dets, truth, ["cat"])
    assert ap[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3) and mean == ap[0]
    ap07, _ = detection_ap(dets, truth, ["cat"], method="voc2007")
    assert ap07[0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_difficult_boxes_neither_count_nor_penalise():
    truth = [gt([CAT], [True])]
    ap, mean = detection_ap([[Detection("cat", 0.9, CAT)]], truth, ["cat"])
    assert math.isnan(ap[0]) and math.isnan(mean), "only difficult boxes: no AP"
    truth = [gt([CAT, (100, 100, 140, 140)], [True, False])]
    dets = [[Detection("cat", 0.9, CAT), Detection("cat", 0.8, (100, 100, 140, 140))]]
    assert detection_ap(dets, truth, ["cat"])[0][0] == pytest.approx(1.0), "the hit on the difficult box is ignored"


def test_each_box_is_matched_once_and_misses_cap_recall():
    truth = [gt([CAT, (100, 100, 140, 140)])]
    ap, _ = detection_ap([[Detection("cat", 0.9, CAT), Detection("cat", 0.8, CAT)]], truth, ["cat"])
    assert ap[0] == pytest.approx(0.5), "recall stops at 1/2; the duplicate is a false positive"


def test_iou_threshold_is_inclusive():
    # IoU exactly 1/2: box (10, 10, 50, 30) inside CAT covers half of it.
    truth = [gt([CAT])]
    assert detection_ap([[Detection("cat", 0.9, (10, 10, 50, 30))]], truth, ["cat"])[0][0] == 1.0
    assert detection_ap([[Detection("cat", 0.9, (10, 10, 50, 29))]], truth, ["cat"])[0][0] == 0.0


def test_classes_are_kept_apart_and_absent_classes_are_nan():
    truth = [GroundTruth(np.array([CAT, CAT]), ["cat", "dog"], np.array([False, False]))]
    dets = [[Detection("dog", 0.9, CAT)]]
    ap, mean = detection_ap(dets, truth, ["cat", "dog", "cow"])
    assert ap[0] == 0.0 and ap[1] == 1.0 and math.isnan(ap[2]) and mean == 0.5


def test_bad_input():
    with pytest.raises(ValueError, match="detections for 2 images, ground truth for 1"):
        detection_ap([[], []], [gt([CAT])], ["cat"])
    with pytest.raises(ValueError, match=r"unknown classes \['bird'\]"):
        detection_ap([[Detection("bird", 0.5, CAT)]], [gt([CAT])], ["cat"])


@st.composite
def det_case(draw):
    n_img = draw(st.integers(1, 4))
    truth, dets = [], []
    for _ in range(n_img):
        boxes, diff = [], []
        for _ in range(draw(st.integers(0, 3))):
            x, y = draw(st.integers(0, 12)), draw(st.integers(0, 12))
            boxes.append((x, y, x + draw(st.integers(2, 8)), y + draw(st.integers(2, 8))))
            diff.append(draw(st.booleans()))
        truth.append((boxes, diff))
        row = []
        for _ in range(draw(st.integers(0, 5))):
            x, y = draw(st.integers(0, 12)), draw(st.integers(0, 12))
            row.append((draw(st.integers(0, 5)) / 5, (x, y, x + draw(st.integers(2, 8)), y + draw(st.integers(2, 8)))))
        dets.append(row)
    return truth, dets


@settings(max_examples=300, deadline=None)
@given(det_case(), st.sampled_from(["voc2010", "voc2007"]))
def test_matches_the_devkit_transcription(case, method):
    truth, dets = case
    ours, _ = detection_ap([[Detection("cat", s, b) for s, b in row] for row in dets],
                           [gt(boxes, diff) if boxes else gt([]) for boxes, diff in truth], ["cat"], method=method)
    ref = voc_det_ap_reference([(i, s, b) for i, row in enumerate(dets) for s, b in row], truth, method)
    if math.isnan(ref):
        assert math.isnan(ours[0])
    else:
        assert ours[0] == pytest.approx(ref, abs=1e-12)
