"""Box-labelled samples from a COCO JSON file (:func:`coco_samples`, the ``coco`` format of
:data:`midlevel_fast.datasets.box_samples.BOX_FORMATS`): ``images`` ``[{id, file_name, width?, height?}]``,
``annotations`` ``[{image_id, bbox: [x, y, w, h], category_id, iscrowd?}]``, ``categories`` ``[{id, name}]``;
``file_name`` is relative to ``images_root`` (default: the JSON's folder); crowd annotations (``iscrowd`` 1) are
skipped; the box is ``(x, y, x + w, y + h)``, taken as it is (COCO's ``bbox`` is already in continuous pixel
coordinates).

Validation as for every box reader (:mod:`midlevel_fast.datasets.box_checks`), and of the JSON itself: a record
that is not an object, a missing field or one of the wrong type, an id used twice, an annotation whose image or
category is not listed, a ``bbox`` that is not four numbers or has a width or height that is not positive, an
image size that is not two positive numbers. Each ``ValueError`` names the file and the record.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeGuard

from midlevel_fast.datasets.box_checks import (BoxSample, SampleIds, check_box, check_label, finish_samples,
                                              oriented_size)
from midlevel_fast.datasets.tags import is_user_file
from midlevel_fast.io.text_input import read_user_json


def coco_samples(path: str | Path, images_root: str | Path | None = None,
                 classes: Sequence[str] | None = None) -> tuple[list[BoxSample], list[str]]:
    """The non-crowd boxes of a COCO JSON file (``where`` is ``<json>: annotation N``, N the 0-based index in
    ``annotations``), and the classes (``classes`` when given, else the sorted category names used). Images are
    ``images_root / file_name`` (default: the JSON's folder); an image's size is its ``width``/``height`` when
    given, else read from the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    base = Path(images_root) if images_root is not None else path.parent
    data = read_user_json(path, str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories'")
    categories, images = _categories(data, path), _images(data, path)
    known = set(classes) if classes is not None else None
    ids, sizes, samples = SampleIds(), {}, []
    for i, rec in enumerate(_records(data, "annotations", path)):
        where = f"{path}: annotation {i}"
        if _is_crowd(rec, where):
            continue
        iid, cid = _field(rec, "image_id", int, where), _field(rec, "category_id", int, where)
        x, y, w, h = _bbox(rec, where)
        if iid not in images:
            raise ValueError(f"{where}: image_id {iid} is not in 'images'")
        if cid not in categories:
            raise ValueError(f"{where}: category_id {cid} is not in 'categories'")
        label = check_label(categories[cid], known, classes, where)
        image_rec, image_where = images[iid]
        image = base / image_rec["file_name"]
        if not is_user_file(image):
            raise ValueError(f"{image_where}: image {image} not found (used by annotation {i})")
        if iid not in sizes:
            sizes[iid] = _image_size(image_rec, image, image_where)
        box = check_box((x, y, x + w, y + h), *sizes[iid], where, image)
        samples.append(BoxSample(ids(image, box), image, box, label, where))
    return finish_samples(samples, classes, path)


def _categories(data: dict, path: Path) -> dict[int, str]:
    """Category id -> name (stripped); an id used twice is refused."""
    categories: dict[int, str] = {}
    for i, rec in enumerate(_records(data, "categories", path)):
        where = f"{path}: category {i}"
        cid, name = _field(rec, "id", int, where), _field(rec, "name", str, where).strip()
        if cid in categories:
            raise ValueError(f"{where}: category id {cid} is used twice")
        categories[cid] = name
    return categories


def _images(data: dict, path: Path) -> dict[int, tuple[dict, str]]:
    """Image id -> (its record, where it is: ``<json>: image N``); a record needs a ``file_name``, an id used twice
    is refused."""
    images: dict[int, tuple[dict, str]] = {}
    for i, rec in enumerate(_records(data, "images", path)):
        where = f"{path}: image {i}"
        iid = _field(rec, "id", int, where)
        _field(rec, "file_name", str, where)
        if iid in images:
            raise ValueError(f"{where}: image id {iid} is used twice (first at {images[iid][1]})")
        images[iid] = (rec, where)
    return images


def _is_crowd(rec: dict, where: str) -> bool:
    """Whether an annotation is a crowd's (``iscrowd`` 1; absent: 0); another value is refused."""
    if rec.get("iscrowd", 0) not in (0, 1, False, True):
        raise ValueError(f"{where}: iscrowd must be 0 or 1, got {rec['iscrowd']!r}")
    return bool(rec.get("iscrowd", 0))


def _bbox(rec: dict, where: str) -> tuple[float, float, float, float]:
    """An annotation's ``bbox`` ``(x, y, w, h)`` as floats: four numbers, width and height positive."""
    bbox = _field(rec, "bbox", list, where)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise ValueError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"{where}: bbox {bbox} has a width or height that is not positive")
    return x, y, w, h


def _image_size(rec: dict, image: Path, where: str) -> tuple[float, float]:
    """``(width, height)`` of an image record: its ``width`` and ``height`` when both are given (positive
    numbers), the EXIF-oriented file's when neither is."""
    given = rec.get("width"), rec.get("height")
    if _positive_number(given[0]) and _positive_number(given[1]):
        return given[0], given[1]
    if given == (None, None):
        return oriented_size(image, where)
    raise ValueError(f"{where}: width and height must be positive numbers, got {given}")


def _positive_number(v: object) -> TypeGuard[float]:
    """Whether ``v`` is a positive int or float (a bool is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _records(data: dict, key: str, path: Path) -> list[dict]:
    """``data[key]``, which must be a list of objects."""
    records = data.get(key)
    if not isinstance(records, list):
        raise ValueError(f"{path}: {key!r} must be a list of records, got {type(records).__name__}")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: {key[:-1]} {i}: expected an object, got {rec!r}")
    return records


def _field(rec: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``rec[name]``, which must be there and of type ``kind`` (a bool is neither an int nor a float here)."""
    if name not in rec:
        raise ValueError(f"{where}: missing field {name!r}")
    value = rec[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{where}: field {name!r} must be {getattr(kind, '__name__', 'a number')}, got {value!r}")
    return value

