"""Patch labels (the paper's rules, every boundary by hand, an exact oracle), box IoU and background
resampling."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import grid
from midlevel_fast.training.labels import DROPPED, box_iou, patch_labels, resample_background
from midlevel_fast.datasets.voc import VOC_CLASSES, load_split, object_arrays
from tests.oracle.labels import patch_labels_reference

C = 3
BG = C
P10 = [0.0, 0.0, 10.0, 10.0]  # |P| = 100: qualifying needs |P∩B| >= 20 and >= 0.6|B|


def label(patch, objects, classes=None, difficult=None) -> int:
    classes = list(range(len(objects))) if classes is None else classes
    out = patch_labels([patch], torch.tensor(objects, dtype=torch.float64).reshape(-1, 4), classes, C, difficult)
    ref = patch_labels_reference([patch], torch.tensor(objects, dtype=torch.float64).reshape(-1, 4), classes, C,
                                 difficult)
    assert out.tolist() == ref.tolist()
    return int(out[0])


@pytest.mark.parametrize(
    "objects, classes, expected, why",
    [
        ([], [], BG, "no objects at all"),
        ([[20, 20, 30, 30]], [1], BG, "object elsewhere"),
        ([[10, 0, 20, 10]], [1], BG, "touching the right edge is no overlap (zero area)"),
        ([[0, 10, 10, 20]], [1], BG, "touching the bottom edge"),
        ([[0, 0, 10, 10]], [2], 2, "patch == object"),
        ([[2, 2, 8, 8]], [1], 1, "object inside: |P∩B| = 36 >= 20 and = |B|"),
        ([[0, 0, 2, 10]], [1], 1, "|P∩B| = 20 = 0.2|P| exactly (and = |B|)"),
        ([[0, 0, 2, 9.75]], [1], DROPPED, "|P∩B| = 19.5 < 0.2|P|: overlaps but does not qualify"),
        ([[4, 0, 14, 10]], [1], 1, "|P∩B| = 60 = 0.6|B| exactly (|B| = 100), 60 >= 20"),
        ([[4.25, 0, 14.25, 10]], [1], DROPPED, "|P∩B| = 57.5 < 0.6|B| = 60"),
        ([[-100, -100, 100, 100]], [0], DROPPED, "patch inside a large object: 100 < 0.6·40000"),
        ([[9, 9, 11, 11]], [0], DROPPED, "corner overlap of 1 < 20"),
    ],
)
def test_single_object_rules(objects, classes, expected, why):
    assert label(P10, objects, classes) == expected, why


def test_exact_boundaries_in_both_factors():
    # |P| = 10·5 = 50 and B = 2·5 = 10 wholly inside: |P∩B| = 10 = 0.2·50 exactly, and = |B|.
    assert label([0, 0, 10, 5], [[0, 0, 2, 5]], [0]) == 0
    assert label([0, 0, 10.25, 5], [[0, 0, 2, 5]], [0]) == DROPPED  # 0.2·51.25 = 10.25 > 10
    # B = 5×5 = 25 of which 3×5 = 15 = 0.6·25 inside P (and 15 >= 0.2·50 = 10): qualifies exactly.
    assert label([0, 0, 10, 5], [[7, 0, 12, 5]], [1]) == 1
    assert label([0, 0, 10, 5], [[7.25, 0, 12.25, 5]], [1]) == DROPPED  # 13.75 < 15


def test_two_objects():
    left, right = [0, 0, 5, 10], [5, 0, 10, 10]  # each 50 = half the patch, wholly inside: both qualify
    assert label(P10, [left, right], [0, 1]) == DROPPED, "two classes: '2 labels: delete'"
    assert label(P10, [left, right], [1, 1]) == DROPPED, "two objects of one class are still two objects"
    far = [50, 50, 60, 60]
    assert label(P10, [left, far], [0, 1]) == 0, "a second object elsewhere does not matter"
    sliver = [9, 0, 30, 10]  # overlaps P by 10 < 20: overlaps but does not qualify
    assert label(P10, [left, sliver], [0, 1]) == 0, "only qualifying objects count toward 'two objects'"
    assert label(P10, [[0, 0, 1, 1], sliver], [0, 1]) == DROPPED, "overlapping two, qualifying for none"


def test_difficult_objects():
    obj = [[0, 0, 5, 10]]
    assert label(P10, obj, [0], [True]) == DROPPED, "qualifying only for a difficult object: not a positive"
    assert label(P10, [[9, 9, 20, 20]], [0], [True]) == DROPPED, "touching a difficult object: not background"
    assert label(P10, [[20, 20, 30, 30]], [0], [True]) == BG, "a difficult object elsewhere"
    both = [[0, 0, 5, 10], [5, 0, 10, 10]]
    assert label(P10, both, [0, 1], [False, True]) == DROPPED, "a difficult object still counts as a second one"
    assert label(P10, [[0, 0, 5, 10], [9, 0, 30, 10]], [0, 1], [False, True]) == 0, "overlapping, not qualifying"


def test_vectorised_shapes_and_dtypes():
    patches = torch.tensor([P10, [20, 20, 30, 30], [0, 0, 100, 100]], dtype=torch.float32)
    out = patch_labels(patches, torch.tensor([[0, 0, 5, 10]]), torch.tensor([2]), C)
    assert out.dtype == torch.int64 and out.tolist() == [2, BG, DROPPED]
    assert patch_labels(patches, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), C).tolist() == [BG] * 3
    assert patch_labels(torch.zeros(0, 4), [[0, 0, 1, 1]], [0], C).shape == (0,)


@pytest.mark.parametrize(
    "patches, objects, classes, match",
    [
        ([[0, 0, 0, 5]], [[0, 0, 1, 1]], [0], r"patch_boxes\[0\].*empty or inverted"),
        ([P10], [[5, 0, 4, 1]], [0], r"object_boxes\[0\].*empty or inverted"),
        ([P10], [[0, 0, 1, math.nan]], [0], "non-finite"),
        ([P10], [[0, 0, 1, 1]], [C], "num_classes"),
        ([P10], [[0, 0, 1, 1]], [-1], "num_classes"),
        ([P10], [[0, 0, 1, 1]], [0, 1], "2 entries for 1"),
        ([P10], [[0, 0, 1, 1]], [0.5], "integers"),
        ([[0, 0, 1]], [[0, 0, 1, 1]], [0], r"\(N, 4\)"),
    ],
)
def test_bad_inputs(patches, objects, classes, match):
    with pytest.raises(ValueError, match=match):
        patch_labels(torch.tensor(patches), torch.tensor(objects), torch.tensor(classes), C)


# Half-pixel coordinates keep every area product exact in float64, so the fast path and the exact rational
# oracle must agree bit for bit; a small range makes overlaps, boundary cases and two-object patches frequent.
coord = st.integers(-4, 28).map(lambda v: v / 2)
extent = st.integers(1, 24).map(lambda v: v / 2)
box = st.tuples(coord, coord, extent, extent).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@given(
    patches=st.lists(box, min_size=1, max_size=20),
    objects=st.lists(st.tuples(box, st.integers(0, C - 1), st.booleans()), max_size=4),
)
def test_matches_exact_reference(patches, objects):
    p = torch.tensor(patches, dtype=torch.float64).reshape(-1, 4)
    b = torch.tensor([o[0] for o in objects], dtype=torch.float64).reshape(-1, 4)
    cls = torch.tensor([o[1] for o in objects], dtype=torch.int64)
    diff = torch.tensor([o[2] for o in objects], dtype=torch.bool)
    assert patch_labels(p, b, cls, C, diff).tolist() == patch_labels_reference(p, b, cls, C, diff).tolist()


def test_every_small_patch_matches_exact_reference():
    # Every patch with integer corners in [0, 6]² (441) against seeded random sets of 1-3 integer objects in
    # the same square: exact boundaries, shared edges and same-class pairs all occur many times.
    ticks = range(7)
    spans = [(a, b) for a in ticks for b in ticks if b > a]
    patches = torch.tensor([[x0, y0, x1, y1] for x0, x1 in spans for y0, y1 in spans], dtype=torch.float64)
    rng = np.random.default_rng(0)
    for _ in range(60):
        m = int(rng.integers(1, 4))
        objects = torch.tensor([[x0, y0, x1, y1] for (x0, x1), (y0, y1) in
                                zip(rng.permutation(spans)[:m], rng.permutation(spans)[:m])], dtype=torch.float64)
        cls = torch.from_numpy(rng.integers(0, 2, m))
        diff = torch.from_numpy(rng.random(m) < 0.2)
        assert torch.equal(patch_labels(patches, objects, cls, C, diff),
                           patch_labels_reference(patches, objects, cls, C, diff))


@given(good=st.lists(box, min_size=1, max_size=4), bad_at=st.integers(0, 3), x=coord, w=st.integers(-8, 0))
def test_degenerate_boxes_rejected_by_both(good, bad_at, x, w):
    boxes = list(good)
    boxes.insert(bad_at % (len(boxes) + 1), [x, x, x + w / 4, x + 1])  # zero-width or inverted
    t = torch.tensor(boxes)
    for fn in (patch_labels, patch_labels_reference):
        with pytest.raises(ValueError, match="empty or inverted"):
            fn(t, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), [0], C)
        with pytest.raises(ValueError, match="empty or inverted"):
            fn(torch.tensor([P10]), t, [0] * len(boxes), C)


def test_box_iou_values():
    iou = box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2]]))
    assert iou.dtype == torch.float64 and iou.tolist() == [[1 / 7, 1.0, 0.0]]


def test_resample_counts_and_membership():
    labels = torch.tensor([0, 1, BG, DROPPED, 2] + [BG] * 49)  # 50 background
    keep = resample_background(labels, C, fraction=0.1, seed=3)
    assert keep.dtype == torch.bool and keep.shape == labels.shape
    assert keep[[0, 1, 4]].all(), "every positive is kept"
    assert not keep[3], "dropped patches are never kept"
    assert int((keep & (labels == BG)).sum()) == 5


@pytest.mark.parametrize("n_bg, fraction, expected", [
    (0, 0.1, 0), (4, 0.1, 0), (5, 0.1, 1), (14, 0.1, 1), (15, 0.1, 2), (50, 0.0, 0), (50, 1.0, 50), (7, 0.5, 4),
])
def test_resample_rounding(n_bg, fraction, expected):
    # floor(fraction·n + 0.5): 0.5 -> 1, 1.4 -> 1, 1.5 -> 2, 3.5 -> 4 (halves up, not Python's banker's round).
    labels = torch.tensor([1] + [BG] * n_bg)
    keep = resample_background(labels, C, fraction, seed=0)
    assert int(keep[1:].sum()) == expected and keep[0]


def test_resample_deterministic_and_seeded():
    labels = torch.full((200,), BG)
    a = resample_background(labels, C, 0.1, seed=7)
    assert torch.equal(a, resample_background(labels, C, 0.1, seed=7))
    assert not torch.equal(a, resample_background(labels, C, 0.1, seed=8))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(resample_background(labels, C, 0.1, seed=g1), a)
    assert not torch.equal(resample_background(labels, C, 0.1, seed=g1), a), "a generator is advanced"
    assert torch.equal(resample_background(labels, C, 0.1, seed=g2), a)


def test_resample_is_uniform():
    labels = torch.full((50,), BG)
    hits = sum(resample_background(labels, C, 0.1, seed=s).long() for s in range(400))
    assert int(hits.sum()) == 400 * 5
    # Each patch is kept with probability 0.1: 40 expected of 400, standard deviation 6.
    assert int(hits.min()) > 15 and int(hits.max()) < 65


@pytest.mark.parametrize("labels, fraction, match", [
    ([BG], 1.5, "fraction"), ([BG], -0.1, "fraction"), ([C + 1], 0.1, "labels must lie"), ([-2], 0.1, "labels must"),
])
def test_resample_bad_inputs(labels, fraction, match):
    with pytest.raises(ValueError, match=match):
        resample_background(torch.tensor(labels), C, fraction)


def test_train_split_counts(voc: Path):
    """The paper grid over every train image: positives per class, background before/after resampling, dropped.

    Run with ``pytest -s`` to see the table (it is the one reported in the issue note).
    """
    images = load_split(voc, "train")
    num = len(VOC_CLASSES)
    all_labels = []
    for i, img in enumerate(images):
        patches = grid(img.width, img.height).boxes
        boxes, classes, difficult = object_arrays(img)
        labels = patch_labels(patches, boxes, classes, num, difficult)
        if i % 40 == 0:  # the float32 grid of real images against the exact oracle, on a sample
            assert labels.tolist() == patch_labels_reference(patches, boxes, classes, num, difficult).tolist()
        all_labels.append(labels)
    labels = torch.cat(all_labels)
    keep = resample_background(labels, num, 0.1, seed=0)
    counts = torch.bincount(labels + 1, minlength=num + 2)  # index 0 = DROPPED, 1..C = classes, C+1 = background
    positives = counts[1:num + 1]
    n_bg, n_dropped = int(counts[num + 1]), int(counts[0])
    n_bg_kept = int((keep & (labels == num)).sum())

    rows = [f"{name:<12}{int(n):>8}" for name, n in zip(VOC_CLASSES, positives)]
    rows += [f"{'positives':<12}{int(positives.sum()):>8}", f"{'background':<12}{n_bg:>8}",
             f"{'bg kept 10%':<12}{n_bg_kept:>8}", f"{'dropped':<12}{n_dropped:>8}",
             f"{'patches':<12}{len(labels):>8}", f"{'images':<12}{len(images):>8}"]
    print(f"\npatch labels on VOC2012 train (paper grid)\n{'class':<12}{'patches':>8}\n" + "\n".join(rows))

    assert len(images) == 422
    assert (positives > 0).all(), "every class has positive patches"
    assert n_bg > positives.sum(), "background dominates before resampling"
    assert n_bg_kept == math.floor(0.1 * n_bg + 0.5)
    assert int(keep.sum()) == int(positives.sum()) + n_bg_kept
    assert n_dropped > 0
