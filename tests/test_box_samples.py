"""Readers of box-labelled samples (VOC Action, ImageFolder, CSV; COCO JSON in test_coco.py) and their dispatch:
boxes, labels, classes, ids, and errors that name the file and the line or record."""
from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast.datasets.box_checks import box_digest
from midlevel_fast.datasets.box_samples import (
    BOX_FORMATS,
    csv_samples,
    imagefolder_samples,
    read_samples,
    sample_arrays,
    voc_action_samples,
)
from midlevel_fast.datasets.tags import content_id
from tests.helpers import H, W, coco_data, write_image

# ---------------------------------------------------------------------------------------------------- VOC Action

ACTIONS = ("jumping", "phoning", "walking", "other")


def person(box=(1, 1, W, H), actions=("jumping",), name="person") -> str:
    """An ``<object>``; ``actions=None`` writes no ``<actions>``; ``box=None`` no ``<bndbox>``."""
    acts = "" if actions is None else (
        "<actions>" + "".join(f"<{a}>{int(a in actions)}</{a}>" for a in ACTIONS) + "</actions>")
    bnd = "" if box is None else (
        "<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box)) + "</bndbox>")
    return f"<object><name>{name}</name>{acts}{bnd}</object>"


def make_action_voc(root, xmls: dict[str, str], split_lines: str | None = None, images: dict | None = None):
    """A VOC2012-like tree: ``xmls`` maps an image id to its ``<object>`` elements (or to a whole document when it
    starts with ``<?``/``<annotation``); each image is written with seed ``images.get(id, index)``."""
    (root / "ImageSets" / "Action").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for i, (image_id, body) in enumerate(xmls.items()):
        doc = body if body.startswith(("<?", "<annotation", "not")) else (
            f"<annotation><size><width>{W}</width><height>{H}</height><depth>3</depth></size>{body}</annotation>")
        (root / "Annotations" / f"{image_id}.xml").write_text(doc)
        seed = (images or {}).get(image_id, i)
        if seed is not None:
            write_image(root / "JPEGImages" / f"{image_id}.jpg", seed)
    lines = split_lines if split_lines is not None else "".join(f"{image_id}\n" for image_id in xmls)
    (root / "ImageSets" / "Action" / "train.txt").write_text(lines)
    return root


def test_voc_action_keeps_single_action_persons_and_warns_once_for_the_excluded(tmp_path, caplog):
    objects = (person((1, 1, 10, 20), ("phoning",)) + person((5, 6, 40, 30), ("jumping", "phoning"))
               + person((2, 2, 8, 8), ()) + person((3, 4, 12, 14), None) + person((1, 1, 5, 5), ("walking",), "cat")
               + person((11, 3, 30, 29), ("jumping",)) + person((2, 3, 4, 5), ("jumping", "walking")))
    root = make_action_voc(tmp_path, {"a": objects, "b": person()}, "a 1\na 2\nb\n\na -1\n")
    with caplog.at_level(logging.WARNING, "midlevel_fast.training"):
        samples, classes = voc_action_samples(root, "train")
    assert [r.getMessage() for r in caplog.records] == [
        f"{root} 'train': excluded 2 person(s) with several actions and 1 with none (a sample has exactly one "
        "action)"]
    assert classes == ["jumping", "phoning"]
    # voc.py's conversion: x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax
    assert [(s.box, s.label) for s in samples] == [((0.0, 0.0, 10.0, 20.0), "phoning"),
                                                   ((10.0, 2.0, 30.0, 29.0), "jumping"),
                                                   ((0.0, 0.0, float(W), float(H)), "jumping")]
    assert [s.where for s in samples] == [f"{root}/Annotations/a.xml: object 1", f"{root}/Annotations/a.xml: object 6",
                                          f"{root}/Annotations/b.xml: object 1"]
    assert samples[0].path == root / "JPEGImages" / "a.jpg"
    cid = content_id(samples[0].path)
    assert samples[0].sample_id == f"{cid}-{box_digest(samples[0].box)}" == samples[0].sample_id
    assert samples[1].sample_id.startswith(cid) and samples[1].sample_id != samples[0].sample_id
    assert list(sample_arrays(samples, classes)) == [1, 0, 0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, "midlevel_fast.training"):
        again, _ = voc_action_samples(root, "train", ["walking", "phoning", "jumping"])
    assert len(caplog.records) == 1 and "excluded 2 person" in caplog.records[0].getMessage()
    assert [s.sample_id for s in again] == [s.sample_id for s in samples]


def test_voc_action_with_the_classes_given_refuses_another(tmp_path):
    root = make_action_voc(tmp_path, {"a": person() + person((2, 2, 9, 9), ("walking",))})
    with pytest.raises(ValueError, match=r"a\.xml: object 2: unknown class 'walking' \(known: jumping, phoning\)"):
        voc_action_samples(root, "train", ["jumping", "phoning"])


@pytest.mark.parametrize("body, message", [
    ("not xml <", r"a\.xml: malformed XML"),
    (person(None), r"a\.xml: object 1: missing field <bndbox> in <object>"),
    (person((1, 1, W + 1, H)), r"a\.xml: object 1: box \(0\.0, 0\.0, 41\.0, 30\.0\) leaves the 40x30 image"),
    (person((0, 1, 5, 5)), r"a\.xml: object 1: box \(-1\.0, 0\.0, 5\.0, 5\.0\) leaves the 40x30 image"),
    (person((50, 1, 60, 5)), r"a\.xml: object 1: box .* lies outside the 40x30 image"),
    (person((1, 1, "x", 5)), r"a\.xml: object 1: <xmax> is not a number: 'x'"),
    (person((9, 1, 5, 5)), r"a\.xml: object 1: inverted box"),
    (person().replace("<jumping>1<", "<jumping>yes<"), r"a\.xml: object 1: action <jumping> must be 0 or 1"),
    (person(actions=()), r"train\.txt: no samples"),
    ("", r"train\.txt: no samples"),
])
def test_bad_voc_action_annotations_name_the_xml(tmp_path, body, message):
    root = make_action_voc(tmp_path, {"a": body})
    with pytest.raises(ValueError, match=message):
        voc_action_samples(root, "train")


def test_voc_action_missing_files(tmp_path):
    root = make_action_voc(tmp_path, {"a": person()}, images={"a": None})
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/a\.jpg' not found \(annotated in .*a\.xml\)"):
        voc_action_samples(root, "train")
    (root / "ImageSets" / "Action" / "train.txt").write_text("zz\n")
    with pytest.raises(FileNotFoundError, match=r"annotation '.*zz\.xml' not found"):
        voc_action_samples(root, "train")
    with pytest.raises(FileNotFoundError, match=r"Action/val\.txt' not found \(available: train\)"):
        voc_action_samples(root, "val")
    (root / "ImageSets" / "Action" / "train.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"train\.txt: no image ids listed"):
        voc_action_samples(root, "train")


def test_voc_action_same_image_under_two_ids_is_a_duplicate(tmp_path):
    root = make_action_voc(tmp_path, {"a": person((1, 1, 9, 9)), "b": person((2, 2, 9, 9)) + person((1, 1, 9, 9))},
                           images={"a": 7, "b": 7})
    with pytest.raises(ValueError, match=r"b\.xml: object 2: box \(0\.0, 0\.0, 9\.0, 9\.0\) of .*b\.jpg is already a "
                                         r"sample at .*a\.xml: object 1"):
        voc_action_samples(root, "train")


# --------------------------------------------------------------------------------------------------- ImageFolder

def test_imagefolder_samples_are_whole_images(tmp_path):
    for i, (split, cls) in enumerate([("train", "run"), ("train", "jump"), ("train", "jump"), ("val", "run")]):
        write_image(tmp_path / split / cls / f"{i}.jpg", i)
    samples, classes = imagefolder_samples(tmp_path, "train")
    assert classes == ["jump", "run"] and [s.label for s in samples] == ["jump", "jump", "run"]
    assert all(s.box is None and s.sample_id == f"{content_id(s.path)}-whole" for s in samples)
    assert samples[0].where == str(tmp_path / "train" / "jump" / "1.jpg")
    val, same = imagefolder_samples(tmp_path, "val", ["jump", "run"])
    assert same == ["jump", "run"] and [s.label for s in val] == ["run"]
    write_image(tmp_path / "val" / "sit" / "x.jpg", 9)
    with pytest.raises(ValueError, match=r"val/sit: class 'sit' is not one of the 2 classes"):
        imagefolder_samples(tmp_path, "val", classes)


# ----------------------------------------------------------------------------------------------------------- CSV

def test_csv_samples(tmp_path):
    write_image(tmp_path / "im" / "a.jpg", 0)
    write_image(tmp_path / "im" / "b.png", 1)
    (tmp_path / "train.csv").write_text("path,x0,y0,x1,y1,label\nim/a.jpg,0,0,40,30,walk\n\nim/a.jpg, 1.5,2,3,4 , "
                                        f"jump \n{tmp_path / 'im' / 'b.png'},10,10,20,20,walk\n")
    samples, classes = csv_samples(tmp_path / "train.csv")
    assert classes == ["jump", "walk"]
    assert [(s.box, s.label) for s in samples] == [((0, 0, 40, 30), "walk"), ((1.5, 2, 3, 4), "jump"),
                                                   ((10, 10, 20, 20), "walk")]
    assert [s.where for s in samples] == [f"{tmp_path / 'train.csv'}:{n}" for n in (2, 4, 5)]
    assert samples[0].path == tmp_path / "im" / "a.jpg" and samples[2].path == tmp_path / "im" / "b.png"
    assert len({s.sample_id for s in samples}) == 3
    assert samples[0].sample_id.split("-")[:2] == samples[1].sample_id.split("-")[:2]
    assert list(sample_arrays(samples, classes)) == [1, 0, 1]
    with pytest.raises(ValueError, match=r"train\.csv:4: class 'jump' is not one of the 1 classes \(walk\)"):
        sample_arrays(samples, ["walk"])
    # the same image under another name: the same box is the same sample
    (tmp_path / "im" / "copy.jpg").write_bytes((tmp_path / "im" / "a.jpg").read_bytes())
    (tmp_path / "val.csv").write_text("im/copy.jpg,1.5,2,3,4,jump\n")
    (copy,), _ = csv_samples(tmp_path / "val.csv", classes)
    assert copy.sample_id == samples[1].sample_id
    (tmp_path / "dup.csv").write_text("im/a.jpg,1.5,2,3,4,jump\nim/copy.jpg,1.5,2,3,4.0004,walk\n")
    with pytest.raises(ValueError, match=r"dup\.csv:2: box .* of .*copy\.jpg is already a sample at .*dup\.csv:1 "
                                         r"\(box .* of .*a\.jpg"):
        csv_samples(tmp_path / "dup.csv")


@pytest.mark.parametrize("text, message", [
    ("im/a.jpg,0,0,5,5\n", r"list\.csv:1: expected 6 fields 'path,x0,y0,x1,y1,label', got 5"),
    ("path,x0,y0,x1,y1,label\nim/a.jpg,0,0,5,5,dog,cat\n", r"list\.csv:2: expected 6 fields"),
    ("im/a.jpg,0,zero,5,5,dog\n", r"list\.csv:1: y0 is not a number: 'zero'"),
    ("im/a.jpg,0,0,inf,5,dog\n", r"list\.csv:1: x1 is not finite: 'inf'"),
    ("im/a.jpg,0,0,nan,5,dog\n", r"list\.csv:1: x1 is not finite"),
    ("im/a.jpg,5,0,5,5,dog\n", r"list\.csv:1: empty box \(5\.0, 0\.0, 5\.0, 5\.0\)"),
    ("im/a.jpg,0,6,5,5,dog\n", r"list\.csv:1: empty box"),
    ("im/a.jpg,0,0,40.5,5,dog\n", r"list\.csv:1: box .* is not inside the 40x30 image .*a\.jpg"),
    ("im/a.jpg,0,0,5,31,dog\n", r"list\.csv:1: box .* is not inside the 40x30 image"),
    ("im/a.jpg,-0.1,0,5,5,dog\n", r"list\.csv:1: box .* is not inside the 40x30 image"),
    ("im/a.jpg,0,0,5,5,dog\nim/missing.jpg,0,0,5,5,dog\n", r"list\.csv:2: image .*missing\.jpg not found"),
    ("im/a.jpg,0,0,5,5,\n", r"list\.csv:1: empty label"),
    (",0,0,5,5,dog\n", r"list\.csv:1: empty image path"),
    ("im/a.jpg,0,0,5,5,horse\n", r"list\.csv:1: unknown class 'horse' \(known: cat, dog\)"),
    ("im/a.jpg,0,0,5,5,dog\nim/a.jpg,0,0,5,5,cat\n", r"list\.csv:2: .* is already a sample at .*list\.csv:1"),
    ("", r"list\.csv: no samples"),
    ("path,x0,y0,x1,y1,label\n", r"list\.csv: no samples"),
])
def test_bad_csv_names_the_line(tmp_path, text, message):
    write_image(tmp_path / "im" / "a.jpg", 0)
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        csv_samples(tmp_path / "list.csv", ["cat", "dog"])


def test_csv_sizes_are_those_of_the_exif_oriented_image(tmp_path):
    write_image(tmp_path / "r.jpg", 0, exif_orientation=6)  # stored 40x30, shown 30x40
    (tmp_path / "ok.csv").write_text("r.jpg,0,0,30,40,dog\n")
    assert csv_samples(tmp_path / "ok.csv")[0][0].box == (0, 0, 30, 40)
    (tmp_path / "bad.csv").write_text("r.jpg,0,0,40,30,dog\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: box .* is not inside the 30x40 image"):
        csv_samples(tmp_path / "bad.csv")


@given(st.tuples(*[st.floats(0, 1) for _ in range(4)]))
def test_csv_boxes_round_trip_and_ids_follow_the_box(tmp_path_factory, unit):
    folder = tmp_path_factory.getbasetemp() / "box_round_trip"
    image = folder / "a.png"
    if not image.exists():
        write_image(image, 0)
    x0, x1 = sorted((unit[0] * W, unit[1] * W))
    y0, y1 = sorted((unit[2] * H, unit[3] * H))
    if x1 <= x0 or y1 <= y0:
        return
    (folder / "l.csv").write_text(f"a.png,{x0!r},{y0!r},{x1!r},{y1!r},c\n")
    (s,), _ = csv_samples(folder / "l.csv")
    assert s.box == (x0, y0, x1, y1) and s.sample_id == f"{content_id(image)}-{box_digest(s.box)}"


@given(st.lists(st.integers(0, 100_000), min_size=4, max_size=4), st.lists(st.integers(0, 100_000), min_size=4,
                                                                           max_size=4))
def test_box_digests_are_equal_exactly_for_boxes_equal_to_a_thousandth(a, b):
    box_a, box_b = (tuple(v / 1000 for v in a), tuple(v / 1000 for v in b))
    assert (box_digest(box_a) == box_digest(box_b)) == (a == b)
    assert box_digest(tuple(v + 0.0004 for v in box_a)) == box_digest(box_a)
    assert len(box_digest(box_a)) == 12 and box_digest(None) == "whole"


# ------------------------------------------------------------------------------------------------------ dispatch

def test_read_samples_dispatches_on_the_format(tmp_path):
    write_image(tmp_path / "im" / "a.jpg", 0)
    write_image(tmp_path / "im" / "b.jpg", 1)
    (tmp_path / "train.csv").write_text("im/a.jpg,0,0,5,5,dog\n")
    (tmp_path / "train.json").write_text(json.dumps(coco_data()))
    for split in ("train.csv", "train"):
        (s,), classes = read_samples("csv", tmp_path, split)
        assert (s.box, classes) == ((0, 0, 5, 5), ["dog"])
    assert len(read_samples("csv", tmp_path / "train.csv", "")[0]) == 1
    assert len(read_samples("coco", tmp_path, "train")[0]) == 3
    write_image(tmp_path / "folder" / "train" / "dog" / "x.jpg", 2)
    assert read_samples("imagefolder", tmp_path / "folder", "train")[1] == ["dog"]
    root = make_action_voc(tmp_path / "voc", {"a": person()})
    assert read_samples("voc-action", root, "train")[1] == ["jumping"]
    assert BOX_FORMATS == ("voc-action", "imagefolder", "csv", "coco")
    with pytest.raises(ValueError, match=r"unknown box sample format 'yolo' \(one of voc-action, imagefolder"):
        read_samples("yolo", tmp_path, "train")
