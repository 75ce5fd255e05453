"""VOC reading: the real split lists and annotations, and synthetic broken trees written to tmp_path."""
from __future__ import annotations

import logging
import re
import unittest
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from midlevel_fast.datasets.voc import (
    VOC_CLASSES,
    VocImage,
    VocObject,
    image_labels,
    load_split,
    object_arrays,
    read_annotation,
    read_split,
)
from tests.helpers import H, W, make_voc, obj

def read(root: Path, **kw) -> VocImage:
    """``read_annotation`` of ``img``, failing if it logs a repair (these annotations need none)."""
    with unittest.TestCase().assertNoLogs("midlevel_fast.datasets.voc", logging.WARNING):
        return read_annotation(root, "img", **kw)


# ---- conversion and fields ------------------------------------------------------------------------------------

def test_box_conversion_one_based_inclusive(tmp_path):
    # Full image (1, 1, W, H) -> (0, 0, W, H); the one-pixel box at 1-based (5, 7) is the 0-based pixel (4, 6),
    # which covers [4, 5) × [6, 7).
    img = read(make_voc(tmp_path, obj(box=(1, 1, W, H)) + obj("dog", box=(5, 7, 5, 7), difficult="1",
                                                                      truncated="1")))
    assert img == VocImage("img", tmp_path / "JPEGImages" / "img.jpg", W, H, [
        VocObject("cat", (0.0, 0.0, float(W), float(H)), False, False),
        VocObject("dog", (4.0, 6.0, 5.0, 7.0), True, True),
    ])


def test_fractional_coordinates_and_missing_flags(tmp_path):
    img = read(make_voc(tmp_path, obj(box=("10.5", 2, "20.25", 9), difficult=None, truncated=None)))
    assert img.objects == [VocObject("cat", (9.5, 1.0, 20.25, 9.0), False, False)], "flags default to false"


def test_part_boxes_are_not_the_object_box(tmp_path):
    part = "<part><name>head</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></part>"
    img = read(make_voc(tmp_path, obj("person", box=(11, 6, 30, 25), extra=part)))
    assert [o.box for o in img.objects] == [(10.0, 5.0, 30.0, 25.0)]


@pytest.mark.parametrize("size", ["", "<size><width>0</width><height>0</height></size>",
                                  "<size><width></width><height>x</height></size>"])
def test_size_from_jpeg_header(tmp_path, size):
    img = read(make_voc(tmp_path, obj(box=(1, 1, 10, 10)), size=size))
    assert (img.width, img.height) == (W, H)


def test_no_objects(tmp_path):
    img = read(make_voc(tmp_path))
    assert img.objects == []
    positives, ignore = image_labels(img)
    assert not positives.any() and not ignore.any()


# ---- errors and repairs ----------------------------------------------------------------------------------------

def test_malformed_xml(tmp_path):
    root = make_voc(tmp_path, xml="<annotation><object><name>cat</name></annotation>")
    with pytest.raises(ValueError, match=r"img\.xml: malformed XML"):
        read(root)


@pytest.mark.parametrize("objects, field", [
    ("<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>", "name"),
    ("<object><name>cat</name></object>", "bndbox"),
    (obj(box=(1, 1, None, 5)), "xmax"),
    (obj(box=(1, 1, " ", 5)), "xmax"),
])
def test_missing_field(tmp_path, objects, field):
    with pytest.raises(ValueError, match=rf"img\.xml: missing field <{field}>"):
        read(make_voc(tmp_path, objects))


@pytest.mark.parametrize("box, match", [
    (("a", 1, 5, 5), "<xmin> is not a number"),
    ((1, 1, "inf", 5), "<xmax> is not finite"),
])
def test_bad_coordinate(tmp_path, box, match):
    with pytest.raises(ValueError, match=rf"img\.xml: {match}"):
        read(make_voc(tmp_path, obj(box=box)))


def test_bad_flag(tmp_path):
    with pytest.raises(ValueError, match=r"img\.xml: <difficult> must be 0 or 1, got 'yes'"):
        read(make_voc(tmp_path, obj(difficult="yes")))


def test_unknown_class(tmp_path, caplog):
    root = make_voc(tmp_path, obj("cat") + obj("unicorn", box=(2, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"img\.xml: unknown class 'unicorn'"):
        read(root)
    with caplog.at_level(logging.WARNING, "midlevel_fast.datasets.voc"):
        img = read_annotation(root, "img", unknown="skip")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"{root / 'Annotations' / 'img.xml'}: skipping object of unknown class 'unicorn'")]
    assert [o.name for o in img.objects] == ["cat"]
    with pytest.raises(ValueError, match="unknown must be"):
        read_annotation(root, "img", unknown="ignore")


def test_custom_classes(tmp_path):
    root = make_voc(tmp_path, obj("cat") + obj("dog"))
    with pytest.raises(ValueError, match="unknown class 'dog'"):
        read_annotation(root, "img", classes=("cat",))


@pytest.mark.parametrize("box", [(10, 5, 9, 8), (3, 9, 8, 8)])
def test_inverted_box(tmp_path, box):
    with pytest.raises(ValueError, match=r"img\.xml: inverted box"):
        read(make_voc(tmp_path, obj(box=box)))


def test_box_partly_outside_is_clamped_with_a_warning(tmp_path, caplog):
    root = make_voc(tmp_path, obj(box=(0, -4, W + 3, 10)))  # xmin = 0 is one pixel left of the image
    clamped = r"img\.xml: box .* leaves the 40x30 image; clamped to \(0\.0, 0\.0, 40\.0, 10\.0\)"
    with caplog.at_level(logging.WARNING, "midlevel_fast.datasets.voc"):
        img = read_annotation(root, "img")
    assert len(caplog.records) == 1 and re.search(clamped, caplog.records[0].getMessage())
    assert img.objects[0].box == (0.0, 0.0, 40.0, 10.0)


@pytest.mark.parametrize("box", [(W + 1, 1, W + 9, 5), (1, -9, 5, 0)])
def test_box_wholly_outside(tmp_path, box):
    with pytest.raises(ValueError, match=r"img\.xml: box .* lies outside the 40x30 image"):
        read(make_voc(tmp_path, obj(box=box)))


def test_missing_files(tmp_path):
    root = make_voc(tmp_path, obj(), jpeg=False)
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/img\.jpg"):
        read(root)
    with pytest.raises(FileNotFoundError, match=r"Annotations/nope\.xml"):
        read_annotation(root, "nope")
    with pytest.raises(FileNotFoundError, match="VOC root .*nowhere"):
        read_split(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/val\.txt.*available: train"):
        read_split(root, "val")


def test_split_list(tmp_path):
    root = make_voc(tmp_path, obj(), split="img\n\n  b  1\nc -1\n")
    assert read_split(root, "train") == ["img", "b", "c"]
    make_voc(tmp_path, obj(), split="img\nimg\n")
    with pytest.raises(ValueError, match=r"train\.txt: image id 'img' is listed more than once"):
        read_split(root, "train")


# ---- labels ----------------------------------------------------------------------------------------------------

def test_image_labels_voc_rule():
    def o(name, difficult):
        return VocObject(name, (0.0, 0.0, 1.0, 1.0), difficult, False)

    img = VocImage("x", Path("x.jpg"), 2, 2, [o("cat", False), o("cat", True), o("dog", True), o("bus", True),
                                               o("bus", False)])
    positives, ignore = image_labels(img)
    assert positives.dtype == bool and positives.shape == ignore.shape == (20,)
    assert {VOC_CLASSES[i] for i in np.flatnonzero(positives)} == {"cat", "bus"}
    assert {VOC_CLASSES[i] for i in np.flatnonzero(ignore)} == {"dog"}, "difficult only: ignored"
    with pytest.raises(ValueError, match="'dog' is not in classes"):
        image_labels(img, ("cat", "bus"))


def test_object_arrays():
    img = VocImage("x", Path("x.jpg"), 9, 9, [VocObject("dog", (1.0, 2.0, 3.0, 4.0), True, False),
                                              VocObject("cat", (0.0, 0.0, 9.0, 9.0), False, True)])
    boxes, classes, difficult = object_arrays(img)
    assert boxes.tolist() == [[1, 2, 3, 4], [0, 0, 9, 9]]
    assert classes.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert difficult.tolist() == [True, False]
    empty = object_arrays(VocImage("y", Path("y.jpg"), 9, 9, []))
    assert [tuple(t.shape) for t in empty] == [(0, 4), (0,), (0,)]


# ---- the real data ---------------------------------------------------------------------------------------------

def test_real_split_sizes(voc: Path):
    train, val, trainval = (read_split(voc, s) for s in ("train", "val", "trainval"))
    assert (len(train), len(val), len(trainval)) == (422, 391, 813)
    assert not set(train) & set(val) and set(train) | set(val) == set(trainval)


def test_real_train_annotations(voc: Path, caplog):
    with caplog.at_level(logging.WARNING, "midlevel_fast.datasets.voc"):
        images = load_split(voc, "train")
    assert not caplog.records  # the official boxes need no repair
    assert [img.image_id for img in images] == read_split(voc, "train")
    n_objects = 0
    for img in images:
        with Image.open(img.path) as im:
            assert im.size == (img.width, img.height), img.image_id
        assert img.objects, f"{img.image_id} has no object"
        for o in img.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height, (img.image_id, o)
        n_objects += len(img.objects)
    assert n_objects > len(images)
    first = images[0]  # 2008_000019.xml: three dogs, the first at 1-based (139, 2, 372, 197)
    assert (first.image_id, first.width, first.height) == ("2008_000019", 480, 272)
    assert first.objects[0] == VocObject("dog", (138.0, 1.0, 372.0, 197.0), False, False)


def test_real_labels_match_per_class_lists(voc: Path):
    # ImageSets/Main/{class}_train.txt is the devkit's classification ground truth: 1 positive, -1 negative,
    # 0 difficult only. image_labels must agree on every image and class.
    images = load_split(voc, "train")
    labels = [image_labels(img) for img in images]
    for c, name in enumerate(VOC_CLASSES):
        lines = (voc / "ImageSets" / "Main" / f"{name}_train.txt").read_text().split("\n")
        gt = dict(line.split() for line in lines if line.strip())
        for img, (positives, ignore) in zip(images, labels):
            assert (positives[c], ignore[c]) == (gt[img.image_id] == "1", gt[img.image_id] == "0"), (name, img)
