"""Detection labels (midlevel_fast/training/detection_labels.py): R-CNN's and Fast R-CNN's rules by hand at every
boundary, ties, difficult and absent objects, the ground-truth helper, and the exact rational oracle (hypothesis,
integer and half-integer boxes)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast.training.detection_labels import BACKGROUND, IGNORED, detection_labels, with_ground_truth
from tests.oracle.detection_labels import detection_labels_reference

OBJ = [0.0, 0.0, 10.0, 10.0]  # area 100
FAST = {"negative_iou": 0.5, "bg_low": 0.1}


def one(proposal, objects, classes=None, difficult=None, **rule) -> tuple[int, int]:
    classes = list(range(len(objects))) if classes is None else classes
    difficult = [False] * len(objects) if difficult is None else difficult
    labels, matched = detection_labels(torch.tensor([proposal]), torch.tensor(objects).reshape(-1, 4),
                                       torch.tensor(classes, dtype=torch.int64), torch.tensor(difficult), **rule)
    assert (labels.tolist(), matched.tolist()) == detection_labels_reference([proposal], objects, classes,
                                                                             difficult, **rule)
    return int(labels[0]), int(matched[0])


@pytest.mark.parametrize(
    "proposal, expected, why",
    [
        ([0, 0, 10, 10], (3, 0), "the object itself: class 2 + 1"),
        ([0, 0, 5, 10], (3, 0), "IoU 50/100 = 0.5 exactly: positive"),
        ([0, 0, 4.75, 10], (IGNORED, -1), "IoU 0.475 < 0.5: between the thresholds"),
        ([0, 0, 3, 10], (IGNORED, -1), "IoU 0.3 exactly: not below negative_iou"),
        ([0, 0, 2.75, 10], (BACKGROUND, -1), "IoU 0.275 < 0.3: background"),
        ([20, 20, 30, 30], (BACKGROUND, -1), "IoU 0: background under R-CNN's rule"),
        ([10, 0, 20, 10], (BACKGROUND, -1), "touching along an edge is no overlap"),
    ],
)
def test_rcnn_rule_at_its_boundaries(proposal, expected, why):
    assert one(proposal, [OBJ], [2]) == expected, why


@pytest.mark.parametrize(
    "proposal, expected, why",
    [
        ([0, 0, 5, 10], (1, 0), "IoU 0.5: positive"),
        ([0, 0, 4.75, 10], (BACKGROUND, -1), "IoU 0.475: background in [0.1, 0.5)"),
        ([0, 0, 1, 10], (BACKGROUND, -1), "IoU 0.1 exactly: background"),
        ([0, 0, 0.75, 10], (IGNORED, -1), "IoU 0.075 < bg_low: ignored"),
        ([20, 20, 30, 30], (IGNORED, -1), "IoU 0: ignored"),
    ],
)
def test_fast_rcnn_rule_at_its_boundaries(proposal, expected, why):
    assert one(proposal, [OBJ], [0], **FAST) == expected, why


def test_ties_in_iou_go_to_the_lowest_object_index():
    left, right = [0, 0, 10, 10], [10, 0, 20, 10]
    straddle = [5, 0, 15, 10]  # IoU 50/150 = 1/3 with each: ignored either way
    assert one(straddle, [left, right], [4, 7]) == (IGNORED, -1)
    wide = [0, 0, 20, 10]  # IoU 100/200 = 0.5 with each
    assert one(wide, [left, right], [4, 7]) == (5, 0), "object 0 (class 4) wins the tie"
    assert one(wide, [right, left], [7, 4]) == (8, 0), "the order of the objects decides, not their place"
    assert one(wide, [left, right], [4, 7], [True, False]) == (IGNORED, -1), "a difficult object wins the tie too"
    assert one(wide, [left, right], [4, 7], [False, True]) == (5, 0)


def test_difficult_objects_neither_teach_nor_penalise():
    assert one(OBJ, [OBJ], [0], [True]) == (IGNORED, -1), "best match difficult at IoU 1: not a positive"
    assert one([0, 0, 4, 10], [OBJ], [0], [True]) == (IGNORED, -1), "IoU 0.4 with a difficult one: not background"
    assert one([0, 0, 2, 10], [OBJ], [0], [True]) == (BACKGROUND, -1), "IoU 0.2: background, as for any object"
    near = [0, 0, 6, 10]  # IoU 0.6 with OBJ; IoU 1 with the difficult copy of itself
    assert one(near, [OBJ, near], [1, 2], [False, True]) == (IGNORED, -1), "the difficult object is the best match"
    assert one(near, [OBJ, [0, 0, 3, 10]], [1, 2], [False, True]) == (2, 0), "the non-difficult object is"


def test_no_objects_and_all_difficult():
    proposals = torch.tensor([[0, 0, 10, 10], [3, 3, 8, 8.]])
    none = (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool))
    labels, matched = detection_labels(proposals, *none)
    assert labels.tolist() == [BACKGROUND, BACKGROUND] and matched.tolist() == [-1, -1]
    assert detection_labels(proposals, *none, **FAST)[0].tolist() == [IGNORED, IGNORED], "IoU 0 < bg_low"
    labels, _ = detection_labels(proposals, torch.tensor([OBJ, [40, 40, 50, 50]]), torch.tensor([0, 1]),
                                 torch.tensor([True, True]))
    assert labels.tolist() == [IGNORED, BACKGROUND], "IoU 1 and 0.25 with difficult object 0"
    labels, matched = detection_labels(torch.zeros(0, 4), torch.tensor([OBJ]), torch.tensor([0]), torch.tensor([False]))
    assert labels.shape == matched.shape == (0,) and labels.dtype == matched.dtype == torch.int64


def test_ground_truth_boxes_are_appended_as_positives():
    gt = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10.]])
    cls, diff = torch.tensor([5, 0, 2]), torch.tensor([False, True, False])
    boxes = with_ground_truth(torch.tensor([[60, 60, 70, 70.]]), gt, diff)
    assert boxes.tolist() == [[60, 60, 70, 70], gt[0].tolist(), gt[2].tolist()], "difficult object 1 left out"
    labels, matched = detection_labels(boxes, gt, cls, diff)
    assert labels.tolist() == [BACKGROUND, 6, 3] and matched.tolist() == [-1, 0, 2]


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([[0, 0, 1]], [OBJ], [0], [False]), {}, r"proposals must be \(N, 4\)"),
        (([[0, 0, 0, 1]], [OBJ], [0], [False]), {}, r"proposals\[0\] .* empty or inverted"),
        (([[0, 0, 1, 1]], [[0, 0, float("nan"), 1]], [0], [False]), {}, "gt_boxes contain non-finite"),
        (([[0, 0, 1, 1]], [OBJ], [0.0], [False]), {}, "gt_labels must be integer"),
        (([[0, 0, 1, 1]], [OBJ], [-1], [False]), {}, "class indices >= 0"),
        (([[0, 0, 1, 1]], [OBJ], [0, 1], [False]), {}, "one per box"),
        (([[0, 0, 1, 1]], [OBJ], [0], [0]), {}, "gt_difficult must be bool"),
        (([[0, 0, 1, 1]], [OBJ], [0], [False]), {"negative_iou": 0.6}, "bg_low <= negative_iou <= positive_iou"),
        (([[0, 0, 1, 1]], [OBJ], [0], [False]), {"positive_iou": 0.0, "negative_iou": 0.0}, "positive_iou > 0"),
    ],
)
def test_bad_arguments_are_refused(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        detection_labels(*(torch.tensor(a) for a in args), **kwargs)


@st.composite
def scenes(draw):
    """Boxes on a 20-pixel canvas in steps of 1/2 (every IoU exact, ties common), some objects difficult."""
    def box():
        x0, y0 = draw(st.integers(0, 30)), draw(st.integers(0, 30))
        return [x0 / 2, y0 / 2, (x0 + draw(st.integers(1, 16))) / 2, (y0 + draw(st.integers(1, 16))) / 2]
    proposals = [box() for _ in range(draw(st.integers(0, 12)))]
    objects = [box() for _ in range(draw(st.integers(0, 5)))]
    proposals += [draw(st.sampled_from(objects))[:] for _ in range(draw(st.integers(0, 3)))] if objects else []
    classes = [draw(st.integers(0, 3)) for _ in objects]
    difficult = [draw(st.booleans()) for _ in objects]
    return proposals, objects, classes, difficult


@settings(max_examples=300, deadline=None)
@given(scenes(), st.sampled_from([{}, FAST, {"positive_iou": 0.7, "negative_iou": 0.3, "bg_low": 0.25}]))
def test_matches_the_exact_loop(scene, rule):
    proposals, objects, classes, difficult = scene
    labels, matched = detection_labels(torch.tensor(proposals).reshape(-1, 4), torch.tensor(objects).reshape(-1, 4),
                                       torch.tensor(classes, dtype=torch.int64),
                                       torch.tensor(difficult, dtype=torch.bool), **rule)
    assert (labels.tolist(), matched.tolist()) == detection_labels_reference(proposals, objects, classes, difficult,
                                                                             **rule)
