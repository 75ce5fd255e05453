"""VOC average precision (hand-computed cases for both methods, a transcription of the devkit loop) and the
evaluation of a head on cached patches (image scores against the power-mean oracle, AP of known rankings)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast.metrics.average_precision import average_precision, format_ap_table, mean_average_precision
from midlevel_fast.training.evaluate import evaluate_head, image_scores, patch_probabilities
from midlevel_fast.training.patches import EvalSet
from tests.oracle.aggregate import power_mean_reference


def devkit_ap(scores, gt, method):
    """``VOCevalcls.m`` transcribed line by line: ``gt`` is 1 / -1 / 0 (positive, negative, difficult only);
    difficult images stay in the ranking and count as neither tp nor fp, as in the devkit."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable, as MATLAB's
    npos = sum(g > 0 for g in gt)
    tp = fp = 0
    rec, prec = [], []
    for i in order:
        tp += gt[i] > 0
        fp += gt[i] < 0
        rec.append(tp / npos)
        prec.append(tp / (tp + fp) if tp + fp else math.nan)  # MATLAB: 0/0 = NaN
    if method == "voc2007":
        ap = 0.0
        for t in [k / 10 for k in range(11)]:
            p = [pr for r, pr in zip(rec, prec) if r >= t and not math.isnan(pr)]
            ap += (max(p) if p else 0.0) / 11
        return ap
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = mpre[i + 1] if math.isnan(mpre[i]) else max(mpre[i], mpre[i + 1])  # MATLAB's max skips NaN
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def ap(scores, positives, ignore=None, method="voc2010"):
    return average_precision(np.array(scores, dtype=float), np.array(positives, dtype=bool),
                             None if ignore is None else np.array(ignore, dtype=bool), method)


def test_hand_computed_both_methods():
    # Ranked: P N P N N, 2 positives. tp = 1 1 2 2 2, prec = 1 1/2 2/3 1/2 2/5, rec = 1/2 1/2 1 1 1.
    s, p = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 0]
    # VOC2010: envelope 1, 1, 2/3, 2/3, ...; recall steps 0 -> 1/2 at p̂ = 1 and 1/2 -> 1 at p̂ = 2/3:
    # 1/2·1 + 1/2·2/3 = 5/6.
    assert ap(s, p) == pytest.approx(5 / 6, abs=1e-12)
    # VOC2007: t = 0..0.5 (6 points) reach precision 1; t = 0.6..1 (5 points) only ranks 3-5, max 2/3:
    # (6 + 5·2/3) / 11 = 28/33.
    assert ap(s, p, method="voc2007") == pytest.approx(28 / 33, abs=1e-12)


def test_positive_last():
    # N N P: the only point with recall is (1, 1/3) -> 1/3 both ways.
    for method in ("voc2010", "voc2007"):
        assert ap([0.9, 0.8, 0.7], [0, 0, 1], method=method) == pytest.approx(1 / 3, abs=1e-12)


@pytest.mark.parametrize("method", ["voc2010", "voc2007"])
def test_perfect_ranking_is_one(method):
    assert ap([5, 4, 3, 2, 1], [1, 1, 1, 0, 0], method=method) == 1.0
    assert ap([3.0], [1], method=method) == 1.0


def test_ties_keep_input_order_as_the_devkit():
    # All scores equal: the ranking is the input order (MATLAB's sort is stable), so the AP depends on it.
    # N P N P: prec 0 1/2 1/3 1/2, rec 0 1/2 1/2 1 -> envelope 1/2 everywhere: 1/2·1/2 + 1/2·1/2 = 1/2.
    assert ap([0.5] * 4, [0, 1, 0, 1]) == pytest.approx(0.5, abs=1e-12)
    # P N P N: prec 1 1/2 2/3 1/2 -> 1/2·1 + 1/2·2/3 = 5/6.
    assert ap([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(5 / 6, abs=1e-12)


def test_ignored_images_are_removed():
    # N P P with the N ignored is a perfect ranking; not ignored: prec 0 1/2 2/3, rec 0 1/2 1, envelope 2/3:
    # 1/2·2/3 + 1/2·2/3 = 2/3.
    assert ap([0.9, 0.8, 0.7], [0, 1, 1]) == pytest.approx(2 / 3, abs=1e-12)
    assert ap([0.9, 0.8, 0.7], [0, 1, 1], ignore=[1, 0, 0]) == 1.0
    # An ignored image's score is never looked at, even if it is NaN.
    assert ap([math.nan, 0.8, 0.7], [0, 1, 0], ignore=[1, 0, 0]) == 1.0


def test_eleven_point_thresholds_are_exact_tenths():
    # 10 positives ranked P P P, 7 N, 7 P. Recall 3/10 is reached at precision 1. Ranks 11..17 have
    # tp = 4..10, precision 4/11 .. 10/17 (increasing), recall 0.4 .. 1.
    # t = 0, .1, .2, .3 -> 1; t = .4 .. 1 (7 points) -> 10/17: AP = (4 + 7·10/17) / 11 = 138/187.
    # With np.arange(0, 1.1, 0.1) the 4th threshold is 0.30000000000000004 > 0.3 and it would be 131/187.
    positives = [1] * 3 + [0] * 7 + [1] * 7
    scores = list(range(len(positives), 0, -1))
    assert ap(scores, positives, method="voc2007") == pytest.approx(138 / 187, abs=1e-12)


@pytest.mark.parametrize("method", ["voc2010", "voc2007"])
def test_no_positives_is_nan(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" or "empty slice" warning either
        assert math.isnan(ap([0.3, 0.2], [0, 0], method=method))
        assert math.isnan(ap([0.3, 0.2], [1, 0], ignore=[1, 0], method=method)), "the only positive is ignored"
        assert math.isnan(ap([], [], method=method))


@pytest.mark.parametrize("args, match", [
    (([0.1, 0.2], [1]), "same length"),
    (([0.1, math.nan], [1, 0]), "NaN"),
    (([0.1], [1], None, "voc2012"), "method"),
])
def test_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        ap(*args)


@given(
    data=st.lists(st.tuples(st.integers(0, 4), st.sampled_from([1, -1, -1, 0])), min_size=1, max_size=30),
    method=st.sampled_from(["voc2010", "voc2007"]),
)
def test_matches_devkit_loop(data, method):
    # Few distinct scores, so ties are common; difficult images kept in the devkit loop, removed in ours.
    scores = [s / 4 for s, _ in data]
    gt = [g for _, g in data]
    ours = ap(scores, [g > 0 for g in gt], [g == 0 for g in gt], method)
    if not any(g > 0 for g in gt):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(devkit_ap(scores, gt, method), abs=1e-12)


def test_mean_average_precision():
    rng = np.random.default_rng(0)
    scores = rng.random((40, 4))
    positives = rng.random((40, 4)) < 0.3
    positives[:, 2] = False  # a class without positives: NaN, left out of the mean
    ignore = (rng.random((40, 4)) < 0.1) & ~positives
    for method in ("voc2010", "voc2007"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            per_class, m = mean_average_precision(scores, positives, ignore, method)
        expected = [average_precision(scores[:, c], positives[:, c], ignore[:, c], method) for c in range(4)]
        np.testing.assert_array_equal(per_class, expected)
        assert math.isnan(per_class[2]) and m == pytest.approx(np.mean(per_class[[0, 1, 3]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per_class, m = mean_average_precision(scores, np.zeros((40, 4), bool))
    assert np.isnan(per_class).all() and math.isnan(m)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        mean_average_precision(scores, positives[:, :3])


def test_format_ap_table():
    table = format_ap_table(["cat", "diningtable"], {
        "patches k=5": np.array([0.8333, 0.5]),
        "probe": [1.0, math.nan],
    })
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1, table
    assert lines[0].split() == ["method", "cat", "diningtable", "mAP"]
    assert lines[2].split() == ["patches", "k=5", "83.3", "50.0", "66.7"]
    assert lines[3].split() == ["probe", "100.0", "-", "100.0"], "NaN shown as '-' and left out of the mAP"
    with pytest.raises(ValueError, match="row 'x' has 1 values for 2 classes"):
        format_ap_table(["cat", "dog"], {"x": [0.5]})


@pytest.mark.parametrize("k", [1.0, 5.0, 2.5])
def test_image_scores_are_each_images_power_mean(k):
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 3, generator=g)
    image_index = torch.randint(0, 4, (50,), generator=g)  # unsorted rows
    image_index[image_index == 2] = 3  # image 2 has no patch
    got = image_scores(probs, image_index, 5, k)  # image 4 neither
    assert got.dtype == torch.float64 and got.shape == (5, 3)
    for i in (0, 1, 3):
        torch.testing.assert_close(got[i], power_mean_reference(probs[image_index == i], k), rtol=1e-12, atol=0)
    assert got[2].tolist() == got[4].tolist() == [0.0, 0.0, 0.0]


def identity_head(scale: float = 10.0) -> torch.nn.Linear:
    """Logits = ``scale`` times the features: a patch's feature vector says which output it shows."""
    head = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(scale * torch.eye(3))
    return head


def test_evaluate_head_ranks_images_by_their_patches():
    # Two classes and the background; image 0 shows class 0 (and background), image 1 class 1, image 2 background
    # only, more clearly than image 0's, so that no two images tie for a class.
    hot = torch.eye(3)
    features = torch.stack([hot[0], 2 * hot[2], hot[1], hot[1], 3 * hot[2], 3 * hot[2], 3 * hot[2]]).half()
    image_index = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    positives = np.array([[True, False], [False, True], [False, False]])
    data = EvalSet(features, image_index, positives, np.zeros_like(positives))
    head = identity_head().train()
    ap, m = evaluate_head(head, data, "softmax", 5.0)
    assert ap.tolist() == [1.0, 1.0] and m == 1.0
    assert head.training  # left in the mode it had
    # The patch probabilities are the softmax over all outputs, background column dropped.
    probs = patch_probabilities(head, features, "softmax", 2, chunk=3)
    torch.testing.assert_close(probs, torch.softmax(10 * features.float(), 1)[:, :2])
    # Reversed positives: each class's only positive image is ranked below another image (AP 1/2 both methods).
    flipped = EvalSet(features, image_index, positives[[1, 0, 2]], np.zeros_like(positives))
    for method in ("voc2010", "voc2007"):
        ap, m = evaluate_head(head, flipped, "softmax", 5.0, method)
        assert ap.tolist() == pytest.approx([0.5, 0.5]) and m == pytest.approx(0.5)
