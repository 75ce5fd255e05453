"""Recall of candidate boxes (midlevel_fast/metrics/proposal_recall.py): a hand-worked case, difficult objects and
empty images, refused input, random integer boxes against the box-by-box oracle with exact IoU, and the default
dense proposals against the square windows on real VOC val images."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast.backbones import get_backbone
from midlevel_fast.datasets.voc import object_arrays, read_annotation
from midlevel_fast.features.proposals import dense_proposals
from midlevel_fast.metrics.proposal_recall import ProposalRecall, proposal_recall
from tests.oracle.proposal_recall import proposal_recall_reference


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def flags(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def test_hand_worked_example():
    # Image 0: a 10x10 object matched exactly (IoU 1) and a 2x1 object half covered (IoU 1/2), a difficult object
    # nobody covers. Image 1: one object and no proposals (IoU 0).
    res = proposal_recall([boxes([0, 0, 10, 10], [20, 0, 21, 1]), boxes()],
                          [boxes([0, 0, 10, 10], [20, 0, 22, 1], [50, 50, 60, 60]), boxes([0, 0, 5, 5])],
                          [flags(False, False, True), flags(False)], thresholds=(0.5, 0.7))
    assert res == ProposalRecall(thresholds=(0.5, 0.7), recall=(2 / 3, 1 / 3), mabo=pytest.approx(0.5),
                                 boxes_per_image=1.0, objects=3)


def test_difficult_objects_are_not_counted():
    # The uncovered object is difficult: recall is over the one counted object only, which is found.
    res = proposal_recall([boxes([0, 0, 4, 4])], [boxes([0, 0, 4, 4], [10, 10, 12, 12])], [flags(False, True)])
    assert res.recall == (1.0, 1.0) and res.mabo == 1.0 and res.objects == 1


@pytest.mark.parametrize("args, match", [
    (([boxes()], [boxes(), boxes()], [flags(), flags()]), "one entry per image"),
    (([torch.zeros(3, 5)], [boxes([0, 0, 1, 1])], [flags(False)]), r"proposals\[0\] must be \(n, 4\)"),
    (([boxes()], [torch.zeros(4)], [flags()]), r"gt_boxes\[0\] must be \(n, 4\)"),
    (([boxes()], [boxes([0, 0, 1, 1])], [flags(False, True)]), r"difficult\[0\] has 2 flags for 1 boxes"),
    (([boxes([0, 0, 1, 1])], [boxes([0, 0, 1, 1])], [flags(True)]), "no non-difficult object"),
    (([], [], []), "no non-difficult object"),
])
def test_bad_input_is_refused(args, match):
    with pytest.raises(ValueError, match=match):
        proposal_recall(*args)


@pytest.mark.parametrize("thresholds", [(), (float("nan"),), (1.5,), (-0.1, 0.5)])
def test_bad_thresholds_are_refused(thresholds):
    with pytest.raises(ValueError, match="thresholds must be"):
        proposal_recall([boxes([0, 0, 1, 1])], [boxes([0, 0, 1, 1])], [flags(False)], thresholds)


@st.composite
def integer_box(draw, positive: bool):
    # Small integer coordinates: many exact IoU ties with the thresholds (1/2, 7/10, 1/4...), and degenerate
    # proposals (zero width or height) when not positive.
    x0, y0 = draw(st.integers(0, 8)), draw(st.integers(0, 8))
    low = 1 if positive else 0
    return [x0, y0, x0 + draw(st.integers(low, 6)), y0 + draw(st.integers(low, 6))]


@st.composite
def scene(draw):
    n = draw(st.integers(1, 4))
    props = [draw(st.lists(integer_box(False), max_size=6)) for _ in range(n)]
    gts = [draw(st.lists(integer_box(True), max_size=4)) for _ in range(n)]
    hard = [[draw(st.booleans()) and draw(st.booleans()) for _ in g] for g in gts]
    thresholds = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.6, 0.7, 1.0]), min_size=1, max_size=3))
    return props, gts, hard, thresholds


@given(case=scene())
def test_matches_the_box_by_box_oracle(case):
    props, gts, hard, thresholds = case
    recall, mabo, per_image, objects = proposal_recall_reference(props, gts, hard, thresholds)
    args = ([boxes(*p) for p in props], [boxes(*g) for g in gts], [flags(*h) for h in hard], thresholds)
    if not objects:
        with pytest.raises(ValueError, match="no non-difficult object"):
            proposal_recall(*args)
        return
    res = proposal_recall(*args)
    assert res.objects == objects and res.thresholds == tuple(thresholds)
    # A recall is k/objects: equal within 1e-12 means the same count k.
    assert res.recall == pytest.approx([float(r) for r in recall], abs=1e-12)
    assert res.mabo == pytest.approx(float(mabo), abs=1e-12)
    assert res.boxes_per_image == pytest.approx(float(per_image), abs=1e-12)


def test_default_proposals_find_at_least_the_objects_the_squares_find(voc: Path, voc_val_ids: list[str]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: only the lattice geometry is read
        backbone = get_backbone("efficientnet_lite0", pretrained=False)
    images = [read_annotation(voc, image_id) for image_id in voc_val_ids[:20]]
    objects = [object_arrays(img) for img in images]
    gt, hard = [b for b, _, _ in objects], [d for _, _, d in objects]

    def recall(config: str) -> ProposalRecall:
        return proposal_recall([dense_proposals(img.width, img.height, backbone, config) for img in images], gt,
                               hard)

    square, default = recall("square"), recall("default")
    assert default.recall[0] >= square.recall[0] and default.boxes_per_image > square.boxes_per_image
