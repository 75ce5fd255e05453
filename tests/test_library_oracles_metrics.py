"""Well-kept libraries as second oracles for the metrics (scikit-learn, torchmetrics, pycocotools).

Each library's definition differs from ours in known ways; every test states the relation it checks:

* Classification AP vs ``sklearn.metrics.average_precision_score``: sklearn's is the non-interpolated step sum
  ``Σ (R_n − R_{n−1})·P_n`` over distinct score thresholds (tied scores form one threshold), ours (``"voc2010"``) is
  the area under the monotone envelope ``p̂ = running max of precision from the right``. Without ties
  ``p̂ ≥ P`` point by point, so ours ≥ sklearn's, equal exactly when precision is non-increasing at the ranks
  where recall changes (e.g. every positive ranked above every negative, or the single positive case).
* Brier score vs ``sklearn.metrics.brier_score_loss``: equal (both ``mean (p − label)²``).
* ECE vs ``torchmetrics.classification.BinaryCalibrationError(norm="l1")``: both use ``bins`` equal-width bins
  with bin ``i`` holding ``i/bins <= p < (i+1)/bins`` and the confidence of the binary event equal to ``p``;
  equal up to float32 rounding (torchmetrics computes in float32) when no ``p`` sits on a bin edge.
* Platt scaling vs ``sklearn.calibration._SigmoidCalibration``: the same objective (Platt's smoothed targets,
  no penalty) but sklearn writes ``1 / (1 + exp(A·x + B))``, so ``(a, b) = (−A, −B)``; equal to the solvers'
  tolerance (sklearn's L-BFGS: ~1e-4 relative).
* Isotonic regression vs ``sklearn.isotonic.IsotonicRegression``: the same least-squares non-decreasing fit
  (tied x pooled first, sklearn's default); equal at the data points when distinct x differ by more than
  sklearn's tie tolerance (it pools x within ``finfo.resolution`` = 1e-15 as ties, we pool only equal x).
* Detection AP@0.5 vs ``pycocotools.cocoeval.COCOeval`` (iouThrs ``[0.5]``, areaRng all, maxDets beyond the
  number of detections):
  - COCO's AP is the mean of the envelope at the 101 recalls ``0, 0.01, …, 1`` (the envelope at the first rank
    whose recall reaches each), ours (``"voc2010"``) the area under it;
  - COCO matches a detection to the best *unmatched* GT at or above the threshold, VOC to the max-IoU GT, and if
    that one is taken the detection is a false positive (a duplicate);
  - COCO's ``iscrowd``/``ignore`` GT vs VOC's ``difficult``: not exercised here (no difficult boxes);
  - boxes: both continuous (COCO ``[x, y, w, h]`` with ``w = x1 − x0``; our VOC reader already subtracts the
    devkit's ``+1``).
  With a single ground-truth box per class the matchings coincide and every one of the 101 recall points at or
  below 1 sees the same envelope value as the area, so both APs are equal; the concrete case
  ``test_coco_matches_unmatched_gt_where_voc_counts_a_duplicate`` shows the matching difference.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sklearn.calibration import _SigmoidCalibration
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss
from torchmetrics.classification import BinaryCalibrationError

from midlevel_fast.scoring.detections import Detection
from midlevel_fast.training.calibration_fit import fit_isotonic, fit_platt
from midlevel_fast.training.detection_ap import GroundTruth, detection_ap
from midlevel_fast.training.evaluate import average_precision
from midlevel_fast.training.reliability import brier_score, expected_calibration_error

BOUNDED = settings(max_examples=60, deadline=None)


def _labels_and_distinct_scores(draw: st.DrawFn, n_min: int = 2) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(n_min, 40))
    labels = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if not labels.any():
        labels[draw(st.integers(0, n - 1))] = True
    # Distinct scores: a permutation of 0..n-1 keeps sklearn's thresholds and our ranks the same points.
    scores = np.array(draw(st.permutations(range(n))), dtype=np.float64)
    return scores, labels


@st.composite
def ranked_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    return _labels_and_distinct_scores(draw)


@BOUNDED
@given(ranked_labels())
def test_classification_ap_bounds_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = case
    ours = average_precision(scores, labels)
    theirs = average_precision_score(labels, scores)
    assert ours >= theirs - 1e-12
    ranked = labels[np.argsort(-scores)]
    precision_at_hits = (np.cumsum(ranked) / np.arange(1, len(ranked) + 1))[ranked]
    if np.all(np.diff(precision_at_hits) <= 0):  # envelope equals precision where recall changes
        assert ours == pytest.approx(theirs, abs=1e-12)
    else:
        assert ours > theirs + 1e-12


def test_classification_ap_strictly_above_sklearn_on_a_rising_precision() -> None:
    # Ranking + − + : precision at the hits 1, 2/3; at + + − + ... a rise: − + + gives 1/2 then 2/3.
    labels = np.array([False, True, True])
    scores = np.array([3.0, 2.0, 1.0])
    assert average_precision_score(labels, scores) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision(scores, labels) == pytest.approx(2 / 3)


@st.composite
def probabilities(draw: st.DrawFn, bins: int = 15) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 60))
    p = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)))
    labels = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    # Off the bin edges (by more than float32 rounding), where the two bin conventions agree.
    cell = p * bins
    p = np.where(np.abs(cell - np.round(cell)) < 1e-4, (np.floor(cell) + 0.5) / bins, p)
    return np.clip(p, 0.0, 1.0 - 0.5 / bins), labels


@BOUNDED
@given(probabilities())
def test_brier_equals_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    p, labels = case
    _, overall = brier_score(p[:, None], labels[:, None])
    assert overall == pytest.approx(brier_score_loss(labels, p), abs=1e-12)


@BOUNDED
@given(probabilities())
def test_ece_equals_torchmetrics(case: tuple[np.ndarray, np.ndarray]) -> None:
    p, labels = case
    _, overall = expected_calibration_error(p[:, None], labels[:, None], bins=15)
    metric = BinaryCalibrationError(n_bins=15, norm="l1")
    theirs = float(metric(torch.from_numpy(p).float(), torch.from_numpy(labels).long()))
    assert overall == pytest.approx(theirs, abs=1e-5)


@st.composite
def score_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(4, 60))
    # On a 1e-3 grid: distinct x stay far apart beyond sklearn's isotonic tie tolerance.
    x = np.array(draw(st.lists(st.integers(-5000, 5000), min_size=n, max_size=n))) / 1000
    labels = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    labels[0], labels[1] = True, False  # both classes present, as the fit requires
    return x, labels


@BOUNDED
@given(score_pairs())
def test_platt_equals_sklearn_sigmoid_calibration(case: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = case
    a, b = fit_platt(x, labels)
    theirs = _SigmoidCalibration().fit(x, labels.astype(np.float64))
    ours_p = 1 / (1 + np.exp(-(a * x + b)))
    np.testing.assert_allclose(ours_p, theirs.predict(x), atol=2e-4)


@BOUNDED
@given(score_pairs())
def test_isotonic_equals_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = case
    knots = fit_isotonic(x, labels)
    ours = np.interp(x, knots[:, 0], knots[:, 1])
    theirs = IsotonicRegression(out_of_bounds="clip").fit(x, labels.astype(np.float64)).predict(x)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def _coco_ap(detections: list[list[Detection]], truth: list[GroundTruth], classes: list[str]) -> np.ndarray:
    """Per-class COCO AP at IoU 0.5, all areas, every detection kept; NaN for a class without GT."""
    images, annotations, results = [], [], []
    for i, (dets, gt) in enumerate(zip(detections, truth)):
        images.append({"id": i, "width": 1000, "height": 1000})
        for box, label in zip(gt.boxes, gt.labels):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": classes.index(label),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        for d in dets:
            x0, y0, x1, y1 = d.box
            results.append({"image_id": i, "category_id": classes.index(d.label), "score": d.score,
                            "bbox": [x0, y0, x1 - x0, y1 - y0]})
    gt_api = COCO()
    gt_api.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c, "name": n} for c, n in enumerate(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api.createIndex()
        dt_api = gt_api.loadRes(results) if results else COCO()
        evaluator = COCOeval(gt_api, dt_api, "bbox")
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.params.areaRng = [[0.0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.params.maxDets = [len(results) + 1]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, :, 0, 0]  # (recall points, classes)
    return np.where(precision.min(axis=0) < 0, np.nan, precision.mean(axis=0))


@st.composite
def single_object_scenes(draw: st.DrawFn) -> tuple[list[list[Detection]], list[GroundTruth]]:
    """Images of which exactly one holds the one GT box of the class; detections anywhere, distinct scores."""
    n_images = draw(st.integers(1, 4))
    owner = draw(st.integers(0, n_images - 1))
    gt_box = (100.0, 100.0, 100.0 + draw(st.integers(20, 200)), 100.0 + draw(st.integers(20, 200)))
    n_dets = draw(st.integers(1, 12))
    scores = draw(st.permutations(range(1, n_dets + 1)))
    detections: list[list[Detection]] = [[] for _ in range(n_images)]
    for k in range(n_dets):
        image = draw(st.integers(0, n_images - 1))
        dx, dy = draw(st.integers(-40, 40)), draw(st.integers(-40, 40))
        box = (gt_box[0] + dx, gt_box[1] + dy, gt_box[2] + dx, gt_box[3] + dy)
        detections[image].append(Detection("a", scores[k] / (n_dets + 1), box))
    empty = GroundTruth(np.zeros((0, 4)), [], np.zeros(0, dtype=bool))
    truth = [GroundTruth(np.array([gt_box]), ["a"], np.zeros(1, dtype=bool)) if i == owner else empty
             for i in range(n_images)]
    return detections, truth


@BOUNDED
@given(single_object_scenes())
def test_detection_ap_equals_coco_with_one_object(scene: tuple[list[list[Detection]], list[GroundTruth]]) -> None:
    detections, truth = scene
    ours, _ = detection_ap(detections, truth, ["a"])
    np.testing.assert_allclose(ours, _coco_ap(detections, truth, ["a"]), atol=1e-12)


def test_coco_matches_unmatched_gt_where_voc_counts_a_duplicate() -> None:
    # GT A = [0, 0, 100, 100], B = [60, 0, 160, 100]. Detection 1 (0.9) is A itself; detection 2 (0.8) at
    # [30, 0, 130, 100] has IoU 0.538 with A and with B (equal: A first): VOC takes A, already matched → false
    # positive, AP = 1/2; COCO takes the best unmatched one, B → true positive, AP = 1.
    truth = [GroundTruth(np.array([[0.0, 0, 100, 100], [60.0, 0, 160, 100]]), ["a", "a"], np.zeros(2, dtype=bool))]
    detections = [[Detection("a", 0.9, (0.0, 0, 100, 100)), Detection("a", 0.8, (30.0, 0, 130, 100))]]
    ours, _ = detection_ap(detections, truth, ["a"])
    assert ours[0] == pytest.approx(0.5)
    assert _coco_ap(detections, truth, ["a"])[0] == pytest.approx(1.0)
