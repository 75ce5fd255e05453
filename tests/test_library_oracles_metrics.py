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
* Box regression vs ``sklearn.linear_model.Ridge``: ``alpha = ridge · n`` (n the class's rows), the intercept
  unpenalised in both; equal to float32 rounding (``test_box_regression_equals_sklearn_ridge``).
* Detection AP, VOC2007 11-point and VOC2010+ area, vs the same rules written on
  ``sklearn.metrics.precision_recall_curve`` (:func:`sklearn_ap`), on scenes whose matching is plain
  (:func:`copy_scenes`): equal.
* Detection AP@0.5 vs ``pycocotools.cocoeval.COCOeval`` (:func:`tests.oracle.coco.coco_evaluation`: iouThrs
  ``[0.5]``, areaRng all, maxDets beyond the number of detections, difficult as ``iscrowd``):
  - COCO's AP is the mean of the envelope at the 101 recalls ``0, 0.01, …, 1`` (the envelope at the first rank
    whose recall reaches each), ours (``"voc2010"``) the area under it;
  - COCO matches a detection to the best *unmatched* GT at or above the threshold, VOC to the max-IoU GT, and if
    that one is taken the detection is a false positive (a duplicate);
  - VOC's ``difficult`` vs COCO's ``iscrowd`` (pycocotools overwrites ``ignore`` with ``iscrowd``): a detection
    matched to one is ignored in both and such boxes do not count as positives, but COCO measures a crowd box's
    overlap as ``intersection / area(detection)`` and prefers any non-crowd box at the threshold, where VOC
    takes the max-IoU box, difficult or not. On copies of boxes or boxes far from all (IoU and crowd overlap 1
    or 0) COCO's labelling of the detections is VOC's, tested through the area AP; each difference has its case;
  - boxes: both continuous (COCO ``[x, y, w, h]`` with ``w = x1 − x0``; our VOC reader already subtracts the
    devkit's ``+1``).
  With a single counted ground-truth box per class (plus difficult ones, on copy scenes) the matchings coincide
  and every one of the 101 recall points at or below 1 sees the same envelope value as the area, so both APs
  are equal; ``test_coco_matches_unmatched_gt_where_voc_counts_a_duplicate`` shows the matching difference.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.calibration import _SigmoidCalibration
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import Ridge
from sklearn.metrics import average_precision_score, brier_score_loss, precision_recall_curve
from torchmetrics.classification import BinaryCalibrationError

from midlevel_fast.scoring.detections import Detection
from midlevel_fast.training.box_regression_fit import MIN_ROWS, RegressionRows, fit_box_regression
from midlevel_fast.training.calibration_fit import fit_isotonic, fit_platt
from midlevel_fast.metrics.detection_ap import GroundTruth, detection_ap
from midlevel_fast.metrics.average_precision import average_precision
from midlevel_fast.metrics.reliability import brier_score, expected_calibration_error
from tests.oracle.coco import coco_ap, coco_evaluation, coco_ranked_hits

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


@st.composite
def regression_cases(draw: st.DrawFn) -> tuple[RegressionRows, float]:
    """Two classes of ``MIN_ROWS`` to 60 rows each, 1 to 6 features on a 1/8 grid (exact in the rows' float16),
    targets on a 1e-3 grid, and a ridge from 1e-3 to 10."""
    dim = draw(st.integers(1, 6))
    counts = [draw(st.integers(MIN_ROWS, 60)) for _ in range(2)]
    n = sum(counts)
    features = np.array(draw(st.lists(st.integers(-40, 40), min_size=n * dim, max_size=n * dim))) / 8
    targets = np.array(draw(st.lists(st.integers(-2000, 2000), min_size=n * 4, max_size=n * 4))) / 1000
    labels = np.repeat([0, 1], counts)
    rows = RegressionRows(torch.from_numpy(features.reshape(n, dim)).half(), torch.zeros(n, 4),
                          torch.from_numpy(targets.reshape(n, 4)), torch.from_numpy(labels))
    return rows, draw(st.sampled_from([1e-3, 0.1, 1.0, 10.0]))


@BOUNDED
@given(regression_cases())
def test_box_regression_equals_sklearn_ridge(case: tuple[RegressionRows, float]) -> None:
    """Ours: ``min_w Σ (x·w + b − t)² + ridge·n·|w|²`` per class and delta, the bias unpenalised, ``n`` the
    class's rows; sklearn's ``Ridge(fit_intercept=True)``: ``min ||X w + b − t||² + alpha·|w|²``, the intercept
    unpenalised (it centres X and t). So ``alpha = ridge · n``. Tolerances: our weights and biases are stored
    as float32 (solved in float64), so they agree to float32 rounding, 1e-6 relative and absolute."""
    rows, ridge = case
    ours = fit_box_regression(rows, 2, ridge)
    for c in range(2):
        sel = (rows.labels == c).numpy()
        theirs = Ridge(alpha=ridge * int(sel.sum()), fit_intercept=True).fit(
            rows.features[sel].double().numpy(), rows.targets[sel].numpy())
        np.testing.assert_allclose(ours.weight[c].double().numpy(), theirs.coef_, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours.bias[c].double().numpy(), theirs.intercept_, rtol=1e-6, atol=1e-6)


def sklearn_ap(scores: np.ndarray, hits: np.ndarray, n_pos: int, method: str) -> float:
    """VOC AP of ranked detections from ``sklearn.metrics.precision_recall_curve``, independent of ours: its
    recall is over the detections' hits, so it is rescaled by ``hits.sum() / n_pos`` (objects no detection found);
    its final ``(recall 0, precision 1)`` point has no threshold and is dropped. ``"voc2007"``: the mean over
    ``t = 0, 0.1, …, 1`` of the largest precision at recall ``>= t`` (0 where none); ``"voc2010"``: the sum over
    the distinct recalls ``r_k`` of ``(r_k − r_{k−1})`` times the largest precision at recall ``>= r_k``. Scores
    must be distinct (sklearn makes one threshold of tied scores, VOC ranks them one by one)."""
    if n_pos == 0:
        return float("nan")
    if not hits.any():
        return 0.0
    precision, recall, _ = precision_recall_curve(hits, scores)
    precision, recall = precision[:-1], recall[:-1] * hits.sum() / n_pos
    if method == "voc2007":
        # Recall >= t/10 decided on counts (hits·10 >= t·n_pos), free of the rounding of the rescaled recall.
        counts = np.rint(recall * n_pos).astype(np.int64)
        return float(np.mean([precision[counts * 10 >= t * n_pos].max(initial=0.0) for t in range(11)]))
    levels = np.unique(recall[recall > 0])
    envelope = np.array([precision[recall >= r].max() for r in levels])
    return float(np.sum(np.diff(np.concatenate([[0.0], levels])) * envelope))


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
    np.testing.assert_allclose(ours, coco_ap(coco_evaluation(detections, truth, ["a"])), atol=1e-12)


def test_coco_matches_unmatched_gt_where_voc_counts_a_duplicate() -> None:
    # GT A = [0, 0, 100, 100], B = [60, 0, 160, 100]. Detection 1 (0.9) is A itself; detection 2 (0.8) at
    # [30, 0, 130, 100] has IoU 0.538 with A and with B (equal: A first): VOC takes A, already matched → false
    # positive, AP = 1/2; COCO takes the best unmatched one, B → true positive, AP = 1.
    truth = [GroundTruth(np.array([[0.0, 0, 100, 100], [60.0, 0, 160, 100]]), ["a", "a"], np.zeros(2, dtype=bool))]
    detections = [[Detection("a", 0.9, (0.0, 0, 100, 100)), Detection("a", 0.8, (30.0, 0, 130, 100))]]
    ours, _ = detection_ap(detections, truth, ["a"])
    assert ours[0] == pytest.approx(0.5)
    assert coco_ap(coco_evaluation(detections, truth, ["a"]))[0] == pytest.approx(1.0)


Scene = tuple[list[list[Detection]], list[GroundTruth], list[list[int]]]
CLASSES = ["a", "b"]


@st.composite
def copy_scenes(draw: st.DrawFn, single_regular: bool = False) -> Scene:
    """Images of up to 4 disjoint GT boxes (classes ``a``/``b``, some difficult) and detections that are each an
    exact copy of one of their image's GT boxes (IoU 1 with it, 0 with the others, under VOC's IoU and COCO's
    crowd overlap alike) or a box far from all of them, with a class drawn independently of the copied box's and
    distinct scores. ``copies[i][k]``: the GT index detection ``k`` of image ``i`` copies, −1 for none.
    ``single_regular``: at most one non-difficult box per class (later ones made difficult)."""
    n_images = draw(st.integers(1, 4))
    truth, plans = [], []
    for _ in range(n_images):
        m = draw(st.integers(0, 4))
        labels = draw(st.lists(st.sampled_from(CLASSES), min_size=m, max_size=m))
        # One box in three difficult, most copies of their box's class: enough hits that precision rises between
        # two of them (where the envelope matters) in about one scene in ten; RISING_PRECISION always has it.
        difficult = np.array(draw(st.lists(st.sampled_from([False, False, True]), min_size=m, max_size=m)))
        boxes = np.array([[200.0 * j, 0.0, 200.0 * j + 100, 100.0] for j in range(m)]).reshape(-1, 4)
        truth.append(GroundTruth(boxes, labels, difficult))
        plan = []
        for _ in range(draw(st.integers(0, 10))):
            j = draw(st.integers(-1, m - 1))
            own = j >= 0 and draw(st.sampled_from([True, True, True, False]))
            plan.append((j, labels[j] if own else draw(st.sampled_from(CLASSES))))
        plans.append(plan)
    if single_regular:
        counted: set[str] = set()
        for t in truth:
            for j, label in enumerate(t.labels):
                t.difficult[j] |= label in counted
                if not t.difficult[j]:
                    counted.add(label)
    n_total = sum(len(p) for p in plans)
    scores = iter(draw(st.permutations(range(1, n_total + 1))))
    far = (1000.0, 0.0, 1100.0, 100.0)  # beyond the 4 GT slots of any image
    detections = [[Detection(label, next(scores) / (n_total + 1), tuple(t.boxes[j]) if j >= 0 else far)
                   for j, label in plan] for plan, t in zip(plans, truth)]
    return detections, truth, [[j for j, _ in plan] for plan in plans]


def _copy_scene_hits(scene: Scene, label: str) -> tuple[np.ndarray, np.ndarray, int]:
    """VOC's labelling of a :func:`copy_scenes` scene written out for its boxes: a copy of an unmatched
    non-difficult box of the class is a hit, of a difficult one ignored, anything else a miss."""
    detections, truth, copies = scene
    rows = [(d.score, i, j) for i, (dets, cp) in enumerate(zip(detections, copies)) for d, j in zip(dets, cp)
            if d.label == label]
    matched, scores, hits = set(), [], []
    for score, i, j in sorted(rows, reverse=True):
        own = j >= 0 and truth[i].labels[j] == label
        if own and truth[i].difficult[j]:
            continue
        scores.append(score)
        hits.append(own and (i, j) not in matched)
        matched.add((i, j))
    n_pos = sum(int(sum(lab == label and not dif for lab, dif in zip(t.labels, t.difficult))) for t in truth)
    return np.array(scores), np.array(hits, dtype=bool), n_pos


# A miss, then two hits: precision 1/2, 2/3 at the hits, so the envelope (2/3 at both) is not the precision.
RISING_PRECISION: Scene = (
    [[Detection("a", 0.9, (1000.0, 0.0, 1100.0, 100.0)), Detection("a", 0.8, (0.0, 0.0, 100.0, 100.0)),
      Detection("a", 0.7, (200.0, 0.0, 300.0, 100.0))]],
    [GroundTruth(np.array([[0.0, 0, 100, 100], [200.0, 0, 300, 100]]), ["a", "a"], np.zeros(2, dtype=bool))],
    [[-1, 0, 1]])


@BOUNDED
@pytest.mark.parametrize("method", ["voc2007", "voc2010"])
@given(scene=copy_scenes())
@example(scene=RISING_PRECISION)
def test_detection_ap_equals_sklearn_precision_recall_curve(method: str, scene: Scene) -> None:
    ours, _ = detection_ap(scene[0], scene[1], CLASSES, method)
    theirs = [sklearn_ap(*_copy_scene_hits(scene, label), method) for label in CLASSES]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


@BOUNDED
@given(scene=copy_scenes())
def test_difficult_and_crowd_label_the_detections_alike(scene: Scene) -> None:
    # Copies or far boxes: VOC's max-IoU box is COCO's best free one, a difficult box's IoU and crowd overlap
    # are both 1 or 0, so COCO's matched/unmatched/ignored labels give our AP under VOC's area rule.
    evaluator = coco_evaluation(scene[0], scene[1], CLASSES)
    ours, _ = detection_ap(scene[0], scene[1], CLASSES)
    theirs = [sklearn_ap(*coco_ranked_hits(evaluator, k), "voc2010") for k in range(len(CLASSES))]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


@BOUNDED
@given(scene=copy_scenes(single_regular=True))
def test_detection_ap_equals_coco_with_one_object_among_difficult_ones(scene: Scene) -> None:
    # One counted box per class: recall is 0 or 1, where COCO's 101 points and the area see the same envelope.
    ours, _ = detection_ap(scene[0], scene[1], CLASSES)
    np.testing.assert_allclose(ours, coco_ap(coco_evaluation(scene[0], scene[1], CLASSES)), atol=1e-12)


def test_coco_prefers_a_regular_box_where_voc_takes_the_best_iou_difficult_one() -> None:
    # A = [0, 0, 100, 100] regular, D = [0, 0, 100, 90] difficult; the detection [0, 0, 100, 92] has IoU 0.978
    # with D and 0.92 with A. VOC: max IoU is D → ignored, A never found, AP 0; COCO: A first → matched, AP 1.
    truth = [GroundTruth(np.array([[0.0, 0, 100, 100], [0.0, 0, 100, 90]]), ["a", "a"], np.array([False, True]))]
    detections = [[Detection("a", 0.9, (0.0, 0, 100, 92))]]
    assert detection_ap(detections, truth, ["a"])[0][0] == pytest.approx(0.0)
    assert coco_ap(coco_evaluation(detections, truth, ["a"]))[0] == pytest.approx(1.0)


def test_coco_crowd_overlap_ignores_a_detection_inside_a_difficult_box_voc_counts_false() -> None:
    # Difficult D = [0, 0, 100, 100]; the detection [0, 0, 50, 50] (0.9) has IoU 0.25 with it (VOC: false
    # positive) but crowd overlap 2500 / 2500 = 1 (COCO: ignored); the second (0.8) finds the regular box R.
    # VOC: precision 1/2 at recall 1, AP 0.5; COCO: AP 1.
    truth = [GroundTruth(np.array([[0.0, 0, 100, 100], [200.0, 200, 300, 300]]), ["a", "a"],
                         np.array([True, False]))]
    detections = [[Detection("a", 0.9, (0.0, 0, 50, 50)), Detection("a", 0.8, (200.0, 200, 300, 300))]]
    assert detection_ap(detections, truth, ["a"])[0][0] == pytest.approx(0.5)
    assert coco_ap(coco_evaluation(detections, truth, ["a"]))[0] == pytest.approx(1.0)
