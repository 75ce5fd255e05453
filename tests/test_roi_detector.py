"""The ROI detector (model/detector.py, scoring/roi_detections.py, training/detector_fit.py): its detections
against a loop over candidates that follows the rule step by step, its storage in the head file, ``score_image``
and ``score_images`` returning its detections while the paper head's scores stay those of the plain dense mode,
the training on a synthetic set with a known answer, and bad input."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from midlevel_fast import AdaptationHead, HeadInfo, load_head, save_head, score_image, score_images
from midlevel_fast.features.proposals import ProposalConfig, dense_proposals
from midlevel_fast.features.roi import RoiConfig, box_features, image_maps, roi_feature_dim
from midlevel_fast.model.box_regression import BoxRegression
from midlevel_fast.model.classifier import PatchClassifier
from midlevel_fast.model.detector import RoiDetector
from midlevel_fast.scoring.detections import decode_boxes
from midlevel_fast.scoring.roi_detections import roi_detections
from midlevel_fast.training.detector_fit import DetectorRows, FitSettings, fit_detector

SCALES = (1.0, 2.0)
CLASSES = ["cat", "dog", "bird"]
ROI = RoiConfig(layout=True)


@pytest.fixture(scope="module")
def maps(lite0, photo):
    return image_maps(lite0, photo, scales=SCALES)


def random_detector(lite0, seed: int = 0, steps: int = 2, voting: float | None = 0.5, **kw) -> RoiDetector:
    """Seeded random weights scaled so that the classes' probabilities spread over (0, 1), and a regression that
    moves boxes by a few percent."""
    g = torch.Generator().manual_seed(seed)
    dim = roi_feature_dim(lite0, ROI)
    weight = torch.randn(len(CLASSES) + 1, dim, generator=g) * 0.05
    reg = BoxRegression(torch.randn(len(CLASSES), 4, dim, generator=g) * 1e-3,
                        torch.randn(len(CLASSES), 4, generator=g) * 0.05, {"features": "roi"})
    return RoiDetector(weight, torch.zeros(len(CLASSES) + 1), reg if steps else None, ProposalConfig(), ROI,
                       steps=steps, voting_iou=voting, **kw)


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def loop_detections(maps, det: RoiDetector, proposals: list, threshold: float, max_per_image: int):
    """The rule of scoring/roi_detections.py, one candidate at a time in Python floats."""
    w, h = maps.plan.width, maps.plan.height

    def prob(box, c):
        return float(det.probabilities(box_features(maps, torch.tensor([box]), det.roi))[0, c])

    def clip(box):
        return [min(max(box[0], 0.0), w), min(max(box[1], 0.0), h), min(max(box[2], 0.0), w),
                min(max(box[3], 0.0), h)]

    props = [clip(p) for p in proposals]
    cands = []
    for c in range(det.num_classes):
        scored = [(prob(p, c), i) for i, p in enumerate(props)]
        picked = sorted([s for s in scored if s[0] >= det.candidate_min], key=lambda s: (-s[0], s[1]))
        for p0, i in picked[: det.candidates_per_class]:
            box, scores, alive = props[i], [p0], True
            for _ in range(det.steps):
                f = box_features(maps, torch.tensor([box]), det.roi)[0].double()
                d = (det.regression.weight[c].double() @ f + det.regression.bias[c].double()).tolist()
                bw, bh = box[2] - box[0], box[3] - box[1]
                cx, cy = box[0] + bw / 2 + d[0] * bw, box[1] + bh / 2 + d[1] * bh
                nw, nh = bw * math.exp(d[2]), bh * math.exp(d[3])
                box = clip([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2])
                if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                    alive = False
                    break
                scores.append(prob(box, c))
            if alive:
                cands.append((c, box, sum(scores) / len(scores)))
    order = sorted(range(len(cands)), key=lambda j: -cands[j][2])  # stable: equal scores in candidate order
    kept: list[int] = []
    for j in order:
        if all(cands[k][0] != cands[j][0] or iou(cands[k][1], cands[j][1]) <= det.nms_iou for k in kept):
            kept.append(j)
    out = []
    for j in [j for j in kept if cands[j][2] >= threshold][:max_per_image]:
        c, box, s = cands[j]
        if det.voting_iou is not None:
            near = [k for k in range(len(cands)) if cands[k][0] == c and iou(cands[k][1], box) >= det.voting_iou]
            total = sum(cands[k][2] for k in near)
            box = [sum(cands[k][2] * cands[k][1][q] for k in near) / total for q in range(4)]
        out.append((CLASSES[c], s, box))
    return out


@pytest.mark.parametrize("steps, voting", [(0, None), (1, None), (2, 0.5)])
def test_detections_follow_the_rule_of_the_loop(lite0, maps, steps, voting):
    det = random_detector(lite0, steps=steps, voting=voting, candidates_per_class=6, candidate_min=0.2)
    props = dense_proposals(maps.plan.width, maps.plan.height, lite0, det.proposals)[::7]
    got = roi_detections(maps, det, CLASSES, proposals=props, threshold=0.25, max_per_image=9)
    want = loop_detections(maps, det, props.tolist(), 0.25, 9)
    assert len(want) > 2, "the check must see several detections"
    assert [d.label for d in got] == [d[0] for d in want]
    np.testing.assert_allclose([d.score for d in got], [d[1] for d in want], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([d.box for d in got], [d[2] for d in want], rtol=1e-4, atol=1e-2)


def test_no_proposals_give_no_detections_and_bad_ones_are_refused(lite0, maps):
    det = random_detector(lite0)
    assert roi_detections(maps, det, CLASSES, proposals=torch.zeros(0, 4)) == []
    with pytest.raises(ValueError, match="must overlap the"):
        roi_detections(maps, det, CLASSES, proposals=torch.tensor([[5000.0, 5000.0, 5100.0, 5100.0]]))
    with pytest.raises(ValueError, match="3 classes, got 2 class names"):
        roi_detections(maps, det, CLASSES[:2])
    with pytest.raises(ValueError, match="threshold in"):
        roi_detections(maps, det, CLASSES, threshold=2.0)


@pytest.mark.parametrize("change, match", [
    (dict(weight=torch.zeros(1, 8), bias=torch.zeros(1)), r"must be \(C\+1, F\)"),
    (dict(bias=torch.zeros(3)), r"must be \(C\+1, F\)"),
    (dict(regression=None), "steps must be >= 0, and 0 without"),
    (dict(regression=BoxRegression(torch.zeros(3, 4, 7), torch.zeros(3, 4), {"features": "roi"})), "must read its"),
    (dict(regression=BoxRegression(torch.zeros(3, 4, 6400), torch.zeros(3, 4))), "must read its"),
    (dict(nms_iou=1.5), "nms_iou in"),
    (dict(voting_iou=0.0), "voting_iou must be"),
])
def test_detector_refuses_inconsistent_parts(lite0, change, match):
    base = random_detector(lite0)
    fields = dict(weight=base.weight, bias=base.bias, regression=base.regression, proposals=base.proposals,
                  roi=base.roi, steps=2)
    with pytest.raises(ValueError, match=match):
        RoiDetector(**{**fields, **change})


def detector_head(lite0, det: RoiDetector) -> tuple[AdaptationHead, HeadInfo]:
    torch.manual_seed(0)
    head = AdaptationHead(lite0.feature_dim, len(CLASSES) + 1, layers=1).eval()
    return head, HeadInfo("efficientnet_lite0", list(CLASSES), layers=1, scales=list(SCALES), detector=det)


def test_the_head_file_carries_the_detector(tmp_path, lite0):
    det = random_detector(lite0)
    head, info = detector_head(lite0, det)
    save_head(tmp_path / "h.safetensors", head, info)
    _, back = load_head(tmp_path / "h.safetensors")
    got = back.detector
    assert got is not None and torch.equal(got.weight, det.weight) and torch.equal(got.bias, det.bias)
    assert torch.equal(got.regression.weight, det.regression.weight) and got.regression == det.regression
    assert (got.proposals, got.roi, got.steps, got.nms_iou, got.voting_iou) == (
        det.proposals, det.roi, det.steps, det.nms_iou, det.voting_iou)
    save_head(tmp_path / "plain.safetensors", head, replace(info, detector=None))
    assert load_head(tmp_path / "plain.safetensors")[1].detector is None
    with pytest.raises(ValueError, match="the detector has 3 classes, the head 2"):
        save_head(tmp_path / "bad.safetensors", AdaptationHead(lite0.feature_dim, 3, layers=1),
                  replace(info, class_names=CLASSES[:2]))


def test_score_image_returns_the_detectors_detections_and_keeps_the_paper_scores(lite0, photo):
    det = random_detector(lite0, candidate_min=0.3, candidates_per_class=20)
    head, info = detector_head(lite0, det)
    with_det = PatchClassifier(lite0, head, info)
    plain = PatchClassifier(lite0, head, replace(info, detector=None))
    got = score_image(photo, with_det, mode="dense", detection_threshold=0.3, precision="fp32")
    base = score_image(photo, plain, mode="dense", detection_threshold=0.3, precision="fp32")
    np.testing.assert_allclose(got.scores, base.scores, rtol=1e-5, atol=1e-6)
    want = roi_detections(image_maps(lite0, photo, scales=SCALES), det, CLASSES, threshold=0.3)
    assert len(want) > 0
    assert [(d.label, round(d.score, 5)) for d in got.detections] == [(d.label, round(d.score, 5)) for d in want]
    assert got.detections != base.detections, "the window detections are not the detector's"
    many = score_images([photo, photo[:300, :400]], with_det, mode="dense", detection_threshold=0.3, precision="fp32")
    assert [(d.label, round(d.score, 4)) for d in many[0].detections] == [(d.label, round(d.score, 4))
                                                                          for d in want]
    batched = [score_image(photo, m, mode="batched", detection_threshold=0.3, precision="fp32").detections
               for m in (with_det, plain)]
    assert batched[0] == batched[1], \
        "the batched mode has no trunk maps: it keeps the windows' detections (documented fallback)"


def test_fit_detector_learns_a_separable_set_and_its_regression():
    """Synthetic rows: feature 0..2 one-hot of the class (background all zero) plus noise, and the rest the
    R-CNN deltas onto the object, so that a linear softmax separates them and the ridge recovers the boxes."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(12):
        n = 60
        labels = torch.randint(0, 4, (n,), generator=g)
        boxes = torch.rand(n, 2, generator=g) * 50
        boxes = torch.cat([boxes, boxes + 20 + torch.rand(n, 2, generator=g) * 30], dim=1)
        deltas = torch.randn(n, 4, generator=g) * 0.1
        targets = torch.where(labels[:, None] > 0, decode_boxes(boxes, deltas), torch.zeros(n, 4))
        onehot = torch.nn.functional.one_hot(labels, 4)[:, 1:].float() * 3
        feats = torch.cat([onehot + 0.1 * torch.randn(n, 3, generator=g), deltas], dim=1)
        rows.append(DetectorRows(feats.half(), boxes, labels, targets))
    det = fit_detector(rows, 3, ProposalConfig(), RoiConfig(), FitSettings(weight_decay=1e-4, epochs=200,
                                                                             ridge=1e-4, passes=1))
    x = torch.cat([r.features for r in rows]).float()
    y = torch.cat([r.labels for r in rows])
    probs = det.probabilities(x)
    pred = torch.where(probs.max(1).values > 0.5, probs.argmax(1) + 1, torch.zeros_like(y))
    assert (pred == y).float().mean() > 0.97
    fg = y > 0
    d = det.regression.deltas(x[fg], y[fg] - 1)
    np.testing.assert_allclose(d.numpy(), x[fg, 3:].numpy(), atol=0.02)
    assert det.description["passes"] == 1 and det.description["positives"] == int(fg.sum())


def test_fit_detector_refuses_rows_without_objects():
    rows = [DetectorRows(torch.zeros(5, 4).half(), torch.ones(5, 4), torch.zeros(5, dtype=torch.int64),
                         torch.zeros(5, 4))]
    with pytest.raises(ValueError, match="at least one foreground row"):
        fit_detector(rows, 2, ProposalConfig(), RoiConfig())
