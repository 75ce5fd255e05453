"""Heat-map overlays (fixed probability scale, colour bar, point, boxes), the choice of maps and the one naming
scheme of their files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast.viz.overlay import (BOX_COLOUR, caption, chosen_maps, colorize, colour_bar, map_file_name,
                                      map_stem, map_stems, overlay, write_maps)
from midlevel_fast.scoring.detections import Detection
from midlevel_fast.scoring.result import ScoreResult


def made_result(presence=None, detections=(), h=60, w=80, points=None) -> ScoreResult:
    """A hand-made result of three classes, "dog" best, then "cat", then "bus", with the maps and points of all
    three (best first, as score_image makes them)."""
    names = ["cat", "dog", "bus"]
    scores = torch.tensor([3.9e-3, 2.5e-2, 1.2e-6])
    maps = torch.stack([torch.full((h, w), v) for v in (0.9, 0.6, 0.1)])
    points = {"dog": (20.5, 30.5), "cat": (60.5, 15.5), "bus": (40.5, 40.5)} if points is None else points
    boxes, probs = torch.tensor([[0.0, 0.0, w, h]]), torch.zeros(1, 3)
    return ScoreResult(names, scores, boxes, probs, torch.zeros(1, dtype=torch.long), (h, w), "dense", 5.0, maps=maps,
                       map_classes=["dog", "cat", "bus"], points=points, seconds=0.25,
                       presence=None if presence is None else torch.tensor(presence), detections=list(detections))


def test_map_file_names_are_flat_unique_and_visible():
    # <image stem>_<rank>_<class>.png: the name without its suffix, folders flattened.
    assert map_file_name(map_stem("img.jpg"), 1, "cat") == "img_1_cat.png"
    assert map_file_name(map_stem("a/b/img.png"), 2, "tiger cat") == "a__b__img_2_tiger_cat.png"
    assert map_file_name(map_stem("demo:chelsea"), 1, "Egyptian cat") == "demo_chelsea_1_Egyptian_cat.png"
    assert map_file_name(map_stem(".hidden.jpg"), 1, "cat") == "hidden_1_cat.png"
    assert map_stem("photo.v2.jpg") == "photo.v2" and map_stem("noext") == "noext" and map_stem("..") == "image"
    assert map_file_name("x", 3, "!!!") == "x_3_class.png"
    assert map_file_name("x", 1, "c" * 50) == "x_1_" + "c" * 40 + ".png"
    # Same stem in other folders: other names.
    assert len({map_stem(k) for k in ("a.jpg", "d/a.jpg", "e/a.jpg")}) == 3
    # Two classes of one name (ImageNet's two "crane") are told apart by their rank.
    assert map_file_name("x", 1, "crane") != map_file_name("x", 2, "crane")


def test_map_stems_keep_images_that_differ_only_by_suffix_apart():
    names = ["a.jpg", "a.png", "d/a.jpg", "b.jpg", "a.jpg.png", "a b.jpg", "a_b.jpg"]
    stems = map_stems(names)
    assert len(set(stems.values())) == len(names)
    # Unique stems stay plain; meeting ones keep their suffix (and, if that is not enough, a hash).
    assert stems["b.jpg"] == "b" and stems["d/a.jpg"] == "d__a" and stems["a.png"] == "a.png"
    assert stems["a.jpg"].startswith("a.jpg") and stems["a b.jpg"].startswith("a_b.jpg")
    assert map_stems(list(reversed(names))) == stems  # deterministic
    assert map_stems(["x/one.jpg", "two.png"]) == {"x/one.jpg": "x__one", "two.png": "two"}


def test_the_scale_is_fixed_an_absent_class_looks_dark():
    image = np.full((60, 80, 3), 128, np.uint8)

    def pixels(value: float) -> np.ndarray:
        im = overlay(image, torch.full((60, 80), value), "c")
        return np.asarray(im)[30:, :80].astype(float)  # below the caption, the image part only

    low, high = pixels(0.1), pixels(0.9)
    assert low.mean() < high.mean() - 40
    # Not scaled to its own maximum: a flat 0.1 map is darker than the grey image it covers.
    assert low.mean() < 128 - 20
    # The colours are the ramp's at the value itself.
    want = np.rint(128 * 0.45 + colorize(np.array([0.9])).astype(float)[0] * 0.55)
    assert np.abs(high[5, 5] - want).max() <= 1


def test_overlay_has_a_colour_bar_from_0_to_1():
    image = np.full((120, 160, 3), 128, np.uint8)
    im = overlay(image, torch.zeros(120, 160), "c")
    assert im.width > 160 and im.height == 120 and colour_bar(120).height == 120
    panel = np.asarray(im)[:, 160:].astype(int)
    # The ramp's two ends are in the panel: 1 (bright yellow) above 0 (near black).
    yellow = colorize(np.array([1.0]))[0].astype(int)
    black = colorize(np.array([0.0]))[0].astype(int)
    rows_yellow = np.nonzero((np.abs(panel - yellow).max(axis=2) <= 2).any(axis=1))[0]
    rows_black = np.nonzero((np.abs(panel - black).max(axis=2) <= 2).any(axis=1))[0]
    assert len(rows_yellow) and len(rows_black) and rows_yellow.min() < rows_black.max()
    # Tiny images get a panel tall enough for the bar and its labels.
    assert overlay(np.zeros((8, 8, 3), np.uint8), torch.zeros(8, 8), "c").height > 8


def test_point_marker_and_boxes_are_drawn():
    image = np.full((100, 140, 3), 90, np.uint8)
    heat = torch.full((100, 140), 0.2)
    plain = np.asarray(overlay(image, heat, "c")).astype(int)
    marked = np.asarray(overlay(image, heat, "c", point=(100.5, 60.5))).astype(int)
    changed = np.nonzero(np.abs(marked - plain).max(axis=2))
    assert len(changed[0]) > 20
    ys, xs = changed
    assert abs(xs.mean() - 100) < 2 and abs(ys.mean() - 60) < 2  # around the point
    assert (marked[55:66, 95:106] == 255).all(axis=2).sum() > 8  # white, visible on a dark map
    boxed = np.asarray(overlay(image, heat, "c", boxes=[((30.0, 40.0, 90.0, 95.0), 0.87)])).astype(int)
    cyan = (boxed == np.array(BOX_COLOUR)).all(axis=2)
    assert cyan[70, 30] and cyan[70, 89] and cyan[94, 60]  # left, right and bottom edges
    assert not cyan[70, 60]  # the inside is not filled


def test_chosen_maps_present_classes_else_the_best():
    assert chosen_maps(made_result()) == [0]  # no calibration: the best class
    # Present classes (>= 0.5) among the maps, best score first: cat (0.97) and dog (0.6), not bus.
    assert chosen_maps(made_result(presence=[0.97, 0.6, 0.1])) == [0, 1]
    assert chosen_maps(made_result(presence=[0.97, 0.2, 0.1])) == [1]
    assert chosen_maps(made_result(presence=[0.1, 0.2, 0.3])) == []  # none present: no map
    assert chosen_maps(made_result(presence=[0.1, 0.2, 0.3]), maps_for=2) == [0, 1]  # forced
    assert chosen_maps(made_result(), maps_for=9) == [0, 1, 2]


def test_captions_say_class_presence_and_score():
    assert caption("cat", 3.9e-3, 0.973) == "cat: 97.3 %, score 3.9e-03"
    assert caption("cat", 3.9e-3, None) == "cat: score 3.9e-03"


def test_write_maps_names_by_rank_and_draws_the_detections(tmp_path):
    det = [Detection("cat", 0.8, (10.0, 10.0, 50.0, 40.0)), Detection("dog", 0.6, (0.0, 0.0, 20.0, 20.0))]
    res = made_result(presence=[0.97, 0.6, 0.1], detections=det)
    image = np.full((60, 80, 3), 128, np.uint8)
    names = write_maps(image, res, tmp_path / "maps", map_stem("sub/img.jpg"))
    assert names == ["sub__img_1_dog.png", "sub__img_2_cat.png"]  # rank by score among the mapped classes
    with Image.open(tmp_path / "maps" / names[1]) as im:
        cat = np.asarray(im.convert("RGB")).astype(int)
    assert cat.shape[0] >= 60 and cat.shape[1] > 80  # a 60-pixel image gets a panel a little taller
    cyan = (cat == np.array(BOX_COLOUR)).all(axis=2)
    assert cyan[30, 10] and cyan[30, 49]  # the cat's box is on the cat's map
    with Image.open(tmp_path / "maps" / names[0]) as im:
        dog = np.asarray(im.convert("RGB")).astype(int)
    assert not (dog[:, 25:80] == np.array(BOX_COLOUR)).all(axis=2).any()  # only the dog's box on the dog's
    # The hot map (dog's, 0.9) is brighter than the cooler one (cat's, 0.6) where neither has marks.
    assert dog[50:, 60:80].mean() > cat[50:, 60:80].mean()
    forced = write_maps(image, res, tmp_path / "forced", "img", [0, 1, 2])
    assert forced == ["img_1_dog.png", "img_2_cat.png", "img_3_bus.png"]


def test_write_maps_without_presence_maps_the_best_class(tmp_path):
    image = np.full((60, 80, 3), 128, np.uint8)
    assert write_maps(image, made_result(), tmp_path, "x") == ["x_1_dog.png"]
    with pytest.raises(IndexError):
        write_maps(image, made_result(), tmp_path, "x", [3])
