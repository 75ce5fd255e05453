"""The COCO JSON reader of box-labelled samples: boxes, labels, classes, ids, and errors that name the file and the
record."""
from __future__ import annotations

import json

import pytest

from midlevel_fast.datasets.coco import coco_samples
from tests.helpers import coco_data, write_image


def test_coco_samples(tmp_path):
    write_image(tmp_path / "im" / "a.jpg", 0)
    write_image(tmp_path / "im" / "b.jpg", 1)
    (tmp_path / "ann.json").write_text(json.dumps(coco_data()))
    samples, classes = coco_samples(tmp_path / "ann.json")
    assert classes == ["jump", "walk"]  # the labels used, sorted; crowd skipped
    assert [(s.box, s.label, s.path.name) for s in samples] == [
        ((1, 2, 11, 22), "jump", "a.jpg"), ((0.5, 0, 40, 30), "walk", "b.jpg"), ((1, 2, 11, 23), "walk", "a.jpg")]
    assert [s.where for s in samples] == [f"{tmp_path / 'ann.json'}: annotation {n}" for n in (0, 2, 3)]
    assert len({s.sample_id for s in samples}) == 3
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "ann.json").write_text(json.dumps(coco_data()))
    again, given_classes = coco_samples(tmp_path / "meta" / "ann.json", tmp_path, ["walk", "jump", "sit"])
    assert given_classes == ["walk", "jump", "sit"] and [s.sample_id for s in again] == [s.sample_id for s in samples]


@pytest.mark.parametrize("data, message", [
    ("{not json", r"ann\.json: not valid JSON"),
    ([], r"ann\.json: expected a COCO object"),
    (coco_data(annotations={}), r"ann\.json: 'annotations' must be a list"),
    (coco_data(annotations=[{"image_id": 1, "category_id": 1}]), r"ann\.json: annotation 0: missing field 'bbox'"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [0, 0, 1, 1]}]), r"annotation 0: missing field 'category_id'"),
    (coco_data(annotations=[{"image_id": "1", "bbox": [0, 0, 1, 1], "category_id": 1}]),
     r"annotation 0: field 'image_id' must be int"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [0, 0, "1", 1], "category_id": 1}]),
     r"annotation 0: bbox must be 4 numbers \[x, y, w, h\]"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [0, 0, 1], "category_id": 1}]), r"annotation 0: bbox must be 4"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [0, 0, 0, 1], "category_id": 1}]),
     r"annotation 0: bbox \[0, 0, 0, 1\] has a width or height that is not positive"),
    (coco_data(annotations=[{"image_id": 7, "bbox": [0, 0, 1, 1], "category_id": 1}]),
     r"annotation 0: image_id 7 is not in 'images'"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 2}]),
     r"annotation 0: category_id 2 is not in 'categories'"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 4}]),
     r"annotation 0: unknown class 'sit' \(known: walk, jump\)"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [1, 0, 40, 1], "category_id": 1}]),
     r"annotation 0: box \(1\.0, 0\.0, 41\.0, 1\.0\) is not inside the 40x30 image .*a\.jpg"),
    (coco_data(annotations=[{"image_id": 2, "bbox": [0, 25, 1, 6], "category_id": 1}]),
     r"annotation 0: box .* is not inside the 40x30 image .*b\.jpg"),  # size read from the file
    (coco_data(images=[{"id": 1, "file_name": "im/a.jpg", "width": 10, "height": 30},
                       {"id": 2, "file_name": "im/b.jpg"}]),
     r"annotation 0: box .* is not inside the 10x30 image"),  # the JSON's size is trusted
    (coco_data(images=[{"id": 1, "file_name": "im/gone.jpg"}]), r"ann\.json: image 0: image .*gone\.jpg not found "
                                                            r"\(used by annotation 0\)"),
    (coco_data(images=[{"id": 1}]), r"ann\.json: image 0: missing field 'file_name'"),
    (coco_data(images=[{"id": 1, "file_name": "im/a.jpg"}, {"id": 1, "file_name": "im/b.jpg"}]),
     r"image 1: image id 1 is used twice"),
    (coco_data(categories=[{"id": 1, "name": "walk"}, {"id": 1, "name": "jump"}]),
     r"category 1: category id 1 is used"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 1, "iscrowd": 1}]),
     r"ann\.json: no samples"),
    (coco_data(annotations=[]), r"ann\.json: no samples"),
    (coco_data(annotations=[{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 1},
                       {"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 3}]),
     r"annotation 1: box .* is already a sample at .*annotation 0"),
])
def test_bad_coco_names_the_record(tmp_path, data, message):
    write_image(tmp_path / "im" / "a.jpg", 0)
    write_image(tmp_path / "im" / "b.jpg", 1)
    (tmp_path / "ann.json").write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(ValueError, match=message):
        coco_samples(tmp_path / "ann.json", classes=["walk", "jump"])
