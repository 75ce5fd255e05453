"""Readers of image-level labels: VOC without its boxes, ImageFolder, CSV and JSON lists, and their errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from midlevel_fast.datasets.tags import imagefolder_tags, list_tags, tag_arrays, voc_tags
from midlevel_fast.datasets.voc import VOC_CLASSES
from tests.helpers import make_voc, obj


def write_image(path, seed: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_voc_tags_are_the_clean_classes_and_difficult_only_ones_are_ignored(tmp_path):
    root = make_voc(tmp_path, obj("cat") + obj("dog", difficult="1") + obj("cat", difficult="1")
                    + obj("bus", difficult="1") + obj("bus"))
    (img,) = voc_tags(root, "train")
    assert (img.image_id, img.tags, img.ignored) == ("img", ("bus", "cat"), ("dog",))
    pos, ign = tag_arrays([img], VOC_CLASSES)
    assert [VOC_CLASSES[i] for i in np.flatnonzero(pos[0])] == ["bus", "cat"]
    assert [VOC_CLASSES[i] for i in np.flatnonzero(ign[0])] == ["dog"]


def test_imagefolder_classes_are_the_sorted_folders(tmp_path):
    for i, (split, cls) in enumerate([("train", "zebra"), ("train", "ant"), ("train", "ant"), ("val", "ant")]):
        write_image(tmp_path / split / cls / f"{i}.jpg", i)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    images, classes = imagefolder_tags(tmp_path, "train")
    assert classes == ["ant", "zebra"] and [img.tags for img in images] == [("ant",), ("ant",), ("zebra",)]
    assert images[0].image_id.startswith("sha1-") and len({img.image_id for img in images}) == 3
    val, same = imagefolder_tags(tmp_path, "val", classes)
    assert same == classes and len(val) == 1
    write_image(tmp_path / "val" / "yak" / "x.jpg", 9)
    with pytest.raises(ValueError, match=r"val/yak: class 'yak' is not one of the 2 classes \(ant, zebra\)"):
        imagefolder_tags(tmp_path, "val", classes)
    with pytest.raises(ValueError, match="test: no such folder"):
        imagefolder_tags(tmp_path, "test")


def test_the_same_image_twice_is_refused(tmp_path):
    a = write_image(tmp_path / "train" / "ant" / "a.jpg", 0)
    (tmp_path / "train" / "bee").mkdir()
    (tmp_path / "train" / "bee" / "copy.jpg").write_bytes(a.read_bytes())
    with pytest.raises(ValueError, match=r"copy.jpg is the same image as .*a.jpg"):
        imagefolder_tags(tmp_path, "train")


def test_csv_and_json_lists(tmp_path):
    write_image(tmp_path / "im" / "a.jpg", 0)
    write_image(tmp_path / "im" / "b.jpg", 1)
    (tmp_path / "train.csv").write_text("path,labels\nim/a.jpg,dog;sofa\nim/b.jpg, cat \n")
    images, classes = list_tags(tmp_path / "train.csv")
    assert classes == ["cat", "dog", "sofa"] and [img.tags for img in images] == [("dog", "sofa"), ("cat",)]
    (tmp_path / "val.json").write_text(json.dumps([{"path": str(tmp_path / "im" / "b.jpg"), "labels": ["sofa"]}]))
    (val,), _ = list_tags(tmp_path / "val.json", classes)
    assert val.tags == ("sofa",) and val.image_id == images[1].image_id


@pytest.mark.parametrize("text, message", [
    ("im/a.jpg,dog\nim/a.jpg,cat\n", r"line 2: .*a.jpg is the same image as .*line 1"),
    ("im/a.jpg,\n", r"line 1: 'im/a.jpg' has no label"),
    ("im/a.jpg,dog,cat\n", r"line 1: expected 'path,label1;label2', got 3 fields"),
    ("im/missing.jpg,dog\n", r"line 1: image .*missing.jpg not found"),
    ("im/a.jpg,horse\n", r"line 1: unknown class 'horse' \(known: cat, dog\)"),
    ("", "no images listed"),
])
def test_bad_csv_lists_name_the_line(tmp_path, text, message):
    write_image(tmp_path / "im" / "a.jpg", 0)
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        list_tags(tmp_path / "list.csv", ["cat", "dog"])


@pytest.mark.parametrize("data, message", [
    ("{not json", "not valid JSON"),
    ('{"path": "a.jpg"}', "expected a list of"),
    ('[{"path": "a.jpg", "labels": "dog"}]', r"record 0: expected \{\"path\": str, \"labels\": \[str, ...\]\}"),
])
def test_bad_json_lists_name_the_record(tmp_path, data, message):
    (tmp_path / "list.json").write_text(data)
    with pytest.raises(ValueError, match=message):
        list_tags(tmp_path / "list.json")


def test_unknown_tag_is_refused_by_tag_arrays(tmp_path):
    images, _ = list_tags(write_list(tmp_path))
    with pytest.raises(ValueError, match=r"class 'dog' is not one of the 1 classes \(cat\)"):
        tag_arrays(images, ["cat"])


def write_list(tmp_path):
    write_image(tmp_path / "a.png", 3)
    (tmp_path / "l.csv").write_text("a.png,dog\n")
    return tmp_path / "l.csv"
