"""Box-labelled samples: one labelled box per sample, for a head that classifies *given* boxes (e.g. the action of
a person whose box is known, as in Oquab et al., CVPR 2014, section 5), read from four layouts
(:data:`BOX_FORMATS`):

* VOC Action (:func:`voc_action_samples`, the VOC2012 layout): ``root/ImageSets/Action/<split>.txt`` lists image
  ids (only the first token of a line is used, repeats are dropped, so the per-class lists ``jumping_train.txt``
  with ``id object ±1`` also work); every ``<object>`` named ``person`` of ``root/Annotations/<id>.xml`` that has
  ``<actions>`` is a person, its actions the child tags of ``<actions>`` whose value is 1 (``<jumping>1</jumping>``).
  A person with exactly one action is a sample; one with several actions, or none, is excluded, as in the paper
  (one warning per call, logged by ``midlevel_fast.datasets.box_samples``, gives the counts). Objects without
  ``<actions>`` (and non-person objects) are skipped. The image is ``root/JPEGImages/<id>.jpg``;
* ImageFolder (:func:`imagefolder_samples`): ``root/<split>/<Class>/<image>`` as
  :func:`~midlevel_fast.datasets.tags.imagefolder_tags` reads it; the box is ``None`` (the whole image);
* CSV (:func:`csv_samples`): lines ``path,x0,y0,x1,y1,label``, an optional first line exactly
  ``path,x0,y0,x1,y1,label``; relative paths are taken from the CSV's folder;
* COCO JSON (:func:`coco_samples`): ``images`` ``[{id, file_name, width?, height?}]``, ``annotations``
  ``[{image_id, bbox: [x, y, w, h], category_id, iscrowd?}]``, ``categories`` ``[{id, name}]``; ``file_name`` is
  relative to ``images_root`` (default: the JSON's folder); crowd annotations (``iscrowd`` 1) are skipped; the box
  is ``(x, y, x + w, y + h)``.

Convention: a box is ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the EXIF-oriented image (pixel ``i``
covers ``[i, i+1)``), as everywhere in the package. CSV and COCO boxes are taken as they are (COCO's ``bbox`` is
already continuous). VOC boxes are converted by :mod:`midlevel_fast.datasets.voc`'s own box reader: the XML's
1-based inclusive ``xmin..xmax`` becomes ``x0 = xmin - 1``, ``x1 = xmax`` (likewise y), and the image size is
the XML's ``<size>`` (the JPEG header when absent), as for VOC detection.

Validation (``ValueError`` naming the file and the line or record, never a silently wrong label): a missing
image, a missing field, a coordinate that is not a finite number, an empty box (``x1 <= x0`` or ``y1 <= y0``), a
box not inside the image (nothing is clipped: ``x0 < 0``, ``y0 < 0``, ``x1 > width`` or ``y1 > height`` is
refused, with the image size), an empty label, an unknown class (when ``classes`` is given, e.g. a validation set
read with the training set's classes), malformed XML or JSON, the same box of the same image twice (by content:
one image under two paths is one image; both places are named), and no samples at all.

Each reader returns the samples and the classes: ``classes`` when given, else the sorted union of the labels.
:attr:`BoxSample.sample_id` is ``<content id>-<box digest>`` (:func:`~midlevel_fast.datasets.tags.content_id`
and a short SHA-1 of the box rounded to 1e-3 px, ``whole`` for the whole image): unique, usable as a file name,
stable across data sets (feature caches are shared between them), and equal for the same box of one image under
two names.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeGuard

import numpy as np
from PIL import Image

from midlevel_fast.io.text_input import read_user_json, read_user_text
from midlevel_fast.datasets.tags import content_id, imagefolder_tags, is_user_file
from midlevel_fast.datasets.voc import _box, _check_root, finite_number, open_annotation

BOX_FORMATS: tuple[str, ...] = ("voc-action", "imagefolder", "csv", "coco")
CSV_HEADER: tuple[str, ...] = ("path", "x0", "y0", "x1", "y1", "label")

Box = tuple[float, float, float, float]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoxSample:
    """One labelled box: ``sample_id`` (unique, usable as a file name: ``<content id>-<box digest>``), the image
    ``path``, the ``box`` ``(x0, y0, x1, y1)`` (``None``: the whole image), its class ``label`` and ``where`` it
    was read (``file:line``, ``file: object N``, ``file: annotation N``) for error messages downstream."""

    sample_id: str
    path: Path
    box: Box | None
    label: str
    where: str


def box_digest(box: Box | None) -> str:
    """``whole`` for ``None``, else the first 12 hex digits of the SHA-1 of the coordinates rounded to 1e-3 px
    (``"x0,y0,x1,y1"`` in integer thousandths of a pixel)."""
    if box is None:
        return "whole"
    text = ",".join(str(int(round(v * 1000))) for v in box)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class _Ids:
    """Content ids, computed once per image file."""

    def __init__(self) -> None:
        self._ids: dict[Path, str] = {}

    def __call__(self, path: Path, box: Box | None) -> str:
        if path not in self._ids:
            self._ids[path] = content_id(path)
        return f"{self._ids[path]}-{box_digest(box)}"


def _oriented_size(path: Path, where: str) -> tuple[int, int]:
    """``(width, height)`` of the EXIF-oriented image, from the header only (orientations 5-8 swap the sides)."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(274, 1)
    except OSError as e:
        raise ValueError(f"{where}: cannot read image {path} ({e})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _positive_number(v: object) -> TypeGuard[float]:
    """Whether ``v`` is a positive int or float (a bool is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _check_box(box: Box, width: float, height: float, where: str, path: Path) -> Box:
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"{where}: box {box} has a coordinate that is not finite")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{where}: empty box {box}: need x1 > x0 and y1 > y0")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"{where}: box {box} is not inside the {width:g}x{height:g} image {path} "
                         f"(0 <= x0 < x1 <= {width:g}, 0 <= y0 < y1 <= {height:g}; boxes are not clipped)")
    return box


def _check_label(label: str, known: set[str] | None, classes: Sequence[str] | None, where: str) -> str:
    if not label:
        raise ValueError(f"{where}: empty label")
    if known is not None and label not in known:
        raise ValueError(f"{where}: unknown class {label!r} (known: {', '.join(classes or ())})")
    return label


def _finish(samples: list[BoxSample], classes: Sequence[str] | None,
            data: Path) -> tuple[list[BoxSample], list[str]]:
    """Refuse an empty result and duplicates; the classes given, else the sorted labels."""
    if not samples:
        raise ValueError(f"{data}: no samples")
    seen: dict[str, BoxSample] = {}
    for s in samples:
        if s.sample_id in seen:
            first = seen[s.sample_id]
            raise ValueError(f"{s.where}: box {s.box} of {s.path} is already a sample at {first.where} (box "
                             f"{first.box} of {first.path}, the same image); list each box once")
        seen[s.sample_id] = s
    names = list(classes) if classes is not None else sorted({s.label for s in samples})
    return samples, names


def _action_ids(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Action" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem)
        raise FileNotFoundError(f"VOC action list {str(path)!r} not found "
                                f"(available: {', '.join(available) or 'none'})")
    ids = list(dict.fromkeys(line.split()[0] for line in path.read_text().splitlines() if line.strip()))
    if not ids:
        raise ValueError(f"{path}: no image ids listed")
    return ids


def _strict_box(obj: ET.Element, width: int, height: int, xml_path: Path, where: str) -> Box:
    """voc.py's :func:`_box` (same conversion and checks), with a box leaving the image refused, not clamped."""
    try:
        return _box(obj, width, height, xml_path, clamp=False)
    except ValueError as e:
        raise ValueError(f"{where}: {str(e).removeprefix(f'{xml_path}: ')}") from None


def _actions(obj: ET.Element, where: str) -> list[str] | None:
    """The actions (child tags valued 1) of a person, ``None`` when it has no ``<actions>``."""
    actions = obj.find("actions")
    if actions is None:
        return None
    out = []
    for child in actions:
        value = (child.text or "").strip()
        if value not in ("0", "1"):
            raise ValueError(f"{where}: action <{child.tag}> must be 0 or 1, got {value!r}")
        if value == "1":
            out.append(child.tag)
    return out


def voc_action_samples(root: str | Path, split: str,
                       classes: Sequence[str] | None = None) -> tuple[list[BoxSample], list[str]]:
    """The persons of VOC Action ``split`` with exactly one action, and the classes (``classes`` when given, else
    the sorted actions seen). ``where`` is ``<xml>: object N`` (N counts the XML's ``<object>`` elements from 1).
    Raises ``FileNotFoundError`` for a missing root or list, ``ValueError`` (naming the XML) otherwise."""
    root = _check_root(root)
    known = set(classes) if classes is not None else None
    ids, samples = _Ids(), []
    several = none = 0
    for image_id in _action_ids(root, split):
        xml_path, jpeg, tree, width, height = open_annotation(root, image_id)
        for k, obj in enumerate(tree.findall("object"), 1):
            where = f"{xml_path}: object {k}"
            if (obj.findtext("name") or "").strip() != "person":
                continue
            actions = _actions(obj, where)
            if actions is None:
                continue
            box = _strict_box(obj, width, height, xml_path, where)
            if len(actions) != 1:
                several += len(actions) > 1
                none += not actions
                continue
            label = _check_label(actions[0], known, classes, where)
            samples.append(BoxSample(ids(jpeg, box), jpeg, box, label, where))
    if several or none:
        _log.warning("%s %r: excluded %d person(s) with several actions and %d with none (a sample has exactly one "
                     "action)", root, split, several, none)
    return _finish(samples, classes, root / "ImageSets" / "Action" / f"{split}.txt")


def imagefolder_samples(root: str | Path, split: str,
                        classes: Sequence[str] | None = None) -> tuple[list[BoxSample], list[str]]:
    """The images of ``root/<split>/<Class>/*`` as whole-image samples (box ``None``; ``where`` is the image
    path), and the classes (:func:`~midlevel_fast.datasets.tags.imagefolder_tags`' rules and errors)."""
    images, names = imagefolder_tags(root, split, classes)
    samples = [BoxSample(f"{img.image_id}-{box_digest(None)}", img.path, None, img.tags[0], str(img.path))
               for img in images]
    return _finish(samples, names, Path(root) / split)


def csv_samples(path: str | Path, classes: Sequence[str] | None = None) -> tuple[list[BoxSample], list[str]]:
    """The boxes of a CSV file ``path,x0,y0,x1,y1,label`` (blank lines skipped; ``where`` is ``<csv>:<line>``),
    and the classes (``classes`` when given, else the sorted labels)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    known = set(classes) if classes is not None else None
    ids, sizes, samples = _Ids(), {}, []
    for line_no, row in enumerate(csv.reader(read_user_text(path, str(path)).splitlines()), 1):
        row = [c.strip() for c in row]
        if not any(row) or (line_no == 1 and tuple(row) == CSV_HEADER):
            continue
        where = f"{path}:{line_no}"
        if len(row) != 6:
            raise ValueError(f"{where}: expected 6 fields '{','.join(CSV_HEADER)}', got {len(row)}")
        name, label = row[0], row[5]
        if not name:
            raise ValueError(f"{where}: empty image path")
        x0, y0, x1, y1 = (finite_number(text, field, where) for text, field in zip(row[1:5], CSV_HEADER[1:5]))
        box = (x0, y0, x1, y1)
        _check_label(label, known, classes, where)
        image = Path(name) if Path(name).is_absolute() else path.parent / name
        if not is_user_file(image):
            raise ValueError(f"{where}: image {image} not found")
        if image not in sizes:
            sizes[image] = _oriented_size(image, where)
        _check_box(box, *sizes[image], where, image)
        samples.append(BoxSample(ids(image, box), image, box, label, where))
    return _finish(samples, classes, path)


def _records(data: dict, key: str, path: Path) -> list[dict]:
    records = data.get(key)
    if not isinstance(records, list):
        raise ValueError(f"{path}: {key!r} must be a list of records, got {type(records).__name__}")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: {key[:-1]} {i}: expected an object, got {rec!r}")
    return records


def _field(rec: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in rec:
        raise ValueError(f"{where}: missing field {name!r}")
    value = rec[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{where}: field {name!r} must be {getattr(kind, '__name__', 'a number')}, got {value!r}")
    return value


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
    categories: dict[int, str] = {}
    for i, rec in enumerate(_records(data, "categories", path)):
        where = f"{path}: category {i}"
        cid, name = _field(rec, "id", int, where), _field(rec, "name", str, where).strip()
        if cid in categories:
            raise ValueError(f"{where}: category id {cid} is used twice")
        categories[cid] = name
    images: dict[int, tuple[dict, str]] = {}
    for i, rec in enumerate(_records(data, "images", path)):
        where = f"{path}: image {i}"
        iid = _field(rec, "id", int, where)
        _field(rec, "file_name", str, where)
        if iid in images:
            raise ValueError(f"{where}: image id {iid} is used twice (first at {images[iid][1]})")
        images[iid] = (rec, where)
    known = set(classes) if classes is not None else None
    ids, sizes, samples = _Ids(), {}, []
    for i, rec in enumerate(_records(data, "annotations", path)):
        where = f"{path}: annotation {i}"
        if rec.get("iscrowd", 0) not in (0, 1, False, True):
            raise ValueError(f"{where}: iscrowd must be 0 or 1, got {rec['iscrowd']!r}")
        if rec.get("iscrowd", 0):
            continue
        iid, cid = _field(rec, "image_id", int, where), _field(rec, "category_id", int, where)
        bbox = _field(rec, "bbox", list, where)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise ValueError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            raise ValueError(f"{where}: bbox {bbox} has a width or height that is not positive")
        if iid not in images:
            raise ValueError(f"{where}: image_id {iid} is not in 'images'")
        if cid not in categories:
            raise ValueError(f"{where}: category_id {cid} is not in 'categories'")
        label = _check_label(categories[cid], known, classes, where)
        image_rec, image_where = images[iid]
        image = base / image_rec["file_name"]
        if not is_user_file(image):
            raise ValueError(f"{image_where}: image {image} not found (used by annotation {i})")
        if iid not in sizes:
            given = image_rec.get("width"), image_rec.get("height")
            if _positive_number(given[0]) and _positive_number(given[1]):
                sizes[iid] = (given[0], given[1])
            elif given == (None, None):
                sizes[iid] = _oriented_size(image, image_where)
            else:
                raise ValueError(f"{image_where}: width and height must be positive numbers, got {given}")
        box = _check_box((x, y, x + w, y + h), *sizes[iid], where, image)
        samples.append(BoxSample(ids(image, box), image, box, label, where))
    return _finish(samples, classes, path)


def _split_file(data: str | Path, split: str, suffix: str) -> Path:
    """``data/<split>``, else ``data/<split><suffix>``; ``data`` itself when it is a file and ``split`` empty."""
    data = Path(data)
    if not split and data.is_file():
        return data
    plain = data / split
    return plain if plain.is_file() or not (data / f"{split}{suffix}").is_file() else data / f"{split}{suffix}"


def read_samples(fmt: str, data: str | Path, split: str,
                 classes: Sequence[str] | None = None) -> tuple[list[BoxSample], list[str]]:
    """Dispatch for the CLI: ``voc-action`` and ``imagefolder`` read split ``split`` of the root ``data``;
    ``csv`` and ``coco`` read the file ``data/<split>`` (or ``data/<split>.csv`` / ``.json``; ``data`` itself
    when it is a file and ``split`` is empty), COCO images relative to that file's folder."""
    if fmt == "voc-action":
        return voc_action_samples(data, split, classes)
    if fmt == "imagefolder":
        return imagefolder_samples(data, split, classes)
    if fmt == "csv":
        return csv_samples(_split_file(data, split, ".csv"), classes)
    if fmt == "coco":
        return coco_samples(_split_file(data, split, ".json"), None, classes)
    raise ValueError(f"unknown box sample format {fmt!r} (one of {', '.join(BOX_FORMATS)})")


def sample_arrays(samples: Sequence[BoxSample], classes: Sequence[str]) -> np.ndarray:
    """The class index of each sample into ``classes``, int64 ``(len(samples),)``; ``ValueError`` naming the
    sample's ``where`` for a label not in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(samples), np.int64)
    for row, s in enumerate(samples):
        if s.label not in index:
            raise ValueError(f"{s.where}: class {s.label!r} is not one of the {len(classes)} classes "
                             f"({', '.join(classes)})")
        out[row] = index[s.label]
    return out
