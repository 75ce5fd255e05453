"""The pointing game (midlevel_fast/metrics/pointing.py): hand-worked hits and misses, TorchRay's integer rule, the
difficult-only skipping, and the hit test and the whole game against the pixel-loop oracle
(tests/oracle/pointing.py)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast.metrics.pointing import TOLERANCE, is_hit, played_classes, pointing_game
from midlevel_fast.datasets.voc import VocImage, VocObject
from tests.oracle.pointing import is_hit_reference, pointing_game_reference

BOX = (10.0, 10.0, 20.0, 20.0)  # VOC xmin = ymin = 11, xmax = ymax = 20: pixel centres 10.5 .. 19.5


@pytest.mark.parametrize("pt,hit", [
    ((15.0, 15.0), True),  # inside
    ((34.4, 15.0), True),  # 14.9 px right of the last centre (19.5)
    ((34.5, 15.0), False),  # exactly 15 px: the disc is open, as TorchRay's `<`
    ((-4.4, 12.0), True), ((-4.5, 12.0), False),  # left of the first centre (10.5)
    ((29.5, 29.5), True),  # corner: 10² + 10² = 200 < 225
    ((30.5, 30.5), False),  # 11² + 11² = 242
])
def test_hand_worked(pt, hit):
    assert is_hit(pt, [BOX], 40, 40) is hit
    assert is_hit_reference(pt, [BOX], 40, 40) is hit


def test_torchray_integer_points():
    """TorchRay's point (u, v) is a pixel index: ours is its centre (u + 0.5, v + 0.5). On VOC's box xmin..xmax =
    11..20 its mask is columns 10..19; u = 34 is 15 px from column 19 (miss), u = 33 is 14 px (hit)."""
    assert not is_hit((34 + 0.5, 15 + 0.5), [BOX], 40, 40)
    assert is_hit((33 + 0.5, 15 + 0.5), [BOX], 40, 40)


def test_mask_is_clipped_to_the_image_and_empty_boxes_never_hit():
    assert not is_hit((45.0, 5.0), [(0.0, 0.0, 100.0, 10.0)], 10, 30), "the mask stops at column 29 (x 29.5)"
    assert is_hit((44.4, 5.0), [(0.0, 0.0, 100.0, 10.0)], 10, 30)
    assert not is_hit((5.0, 5.0), [(5.2, 5.2, 5.4, 5.4)], 10, 10), "covers no pixel centre"
    assert not is_hit((5.0, 5.0), [], 10, 10)
    assert not is_hit((5.5, 5.5), [(5.0, 5.0, 6.0, 6.0)], 10, 10, tolerance=0)
    with pytest.raises(ValueError, match="tolerance"):
        is_hit((1, 1), [BOX], 40, 40, tolerance=-1)
    with pytest.raises(ValueError, match="point"):
        is_hit((float("nan"), 1), [BOX], 40, 40)


@st.composite
def box(draw, h, w):
    x0 = draw(st.integers(-8, 4 * w)) / 4
    y0 = draw(st.integers(-8, 4 * h)) / 4
    return x0, y0, x0 + draw(st.integers(0, 4 * w)) / 4, y0 + draw(st.integers(0, 4 * h)) / 4


@given(data=st.data(), h=st.integers(1, 30), w=st.integers(1, 30), tol=st.sampled_from([0, 1, 2.5, 5, 15]))
def test_hit_matches_the_oracle(data, h, w, tol):
    """Quarter-pixel boxes and points, so that distances exactly at the tolerance are drawn and computed exactly."""
    boxes = data.draw(st.lists(box(h, w), max_size=3))
    pt = (data.draw(st.integers(-80, 4 * w + 80)) / 4, data.draw(st.integers(-80, 4 * h + 80)) / 4)
    assert is_hit(pt, boxes, h, w, tol) == is_hit_reference(pt, boxes, h, w, tol)


CLASSES = ["cat", "dog", "bus"]


def voc_image(image_id, h, w, objects):
    return VocImage(image_id, f"{image_id}.jpg", w, h, [VocObject(c, b, d, False) for c, b, d in objects])


def test_difficult_only_classes_are_skipped_and_difficult_boxes_count_in_the_mask():
    images = [
        voc_image("a", 40, 40, [("cat", BOX, True)]),  # cat only difficult: not played
        voc_image("b", 40, 40, [("cat", BOX, True), ("cat", (30.0, 30.0, 40.0, 40.0), False)]),
        voc_image("c", 40, 40, [("dog", BOX, False)]),
    ]
    assert played_classes(images[0], CLASSES) == [] and played_classes(images[1], CLASSES) == ["cat"]
    points = [{}, {"cat": (15.0, 15.0)}, {"dog": (39.0, 39.0), "bus": (0.0, 0.0)}]  # b: inside the difficult box
    res = pointing_game(images, points, CLASSES)
    assert res.hits.tolist() == [1, 0, 0] and res.misses.tolist() == [0, 1, 0]
    # TorchRay's mean over all classes, a class never played counting 0: (1 + 0 + 0) / 3.
    assert res.class_accuracy.tolist() == [1.0, 0.0, 0.0] and res.accuracy == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="c: no point for class 'dog'"):
        pointing_game(images, [{}, {"cat": (15.0, 15.0)}, {}], CLASSES)
    with pytest.raises(ValueError, match="one mapping of points per image"):
        pointing_game(images, points[:2], CLASSES)


@given(data=st.data(), n=st.integers(1, 4))
def test_game_matches_the_oracle(data, n):
    images, oracle_images, points = [], [], []
    for i in range(n):
        h, w = data.draw(st.integers(1, 24)), data.draw(st.integers(1, 24))
        objects = data.draw(st.lists(st.tuples(st.sampled_from(CLASSES), box(h, w), st.booleans()), max_size=4))
        images.append(voc_image(f"im{i}", h, w, objects))
        oracle_images.append((h, w, objects))
        points.append({c: (data.draw(st.integers(-40, 4 * w + 40)) / 4, data.draw(st.integers(-40, 4 * h + 40)) / 4)
                       for c in CLASSES})
    res = pointing_game(images, points, CLASSES, tolerance=5)
    hits, misses, accuracy = pointing_game_reference(oracle_images, points, CLASSES, tolerance=5)
    assert res.hits.tolist() == hits and res.misses.tolist() == misses
    assert res.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert res.hits.dtype == np.int64 and TOLERANCE == 15
