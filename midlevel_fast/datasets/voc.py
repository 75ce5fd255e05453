"""PASCAL VOC reading: split lists, XML annotations, and image-level classification ground truth.

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates; pixel ``i`` covers ``[i, i+1)``.

VOC stores a box as 1-based *inclusive* pixel indices ``xmin..xmax``: the box covers the pixels ``xmin``,
``xmin+1``, ..., ``xmax`` counted from 1, i.e. the 0-based pixels ``xmin-1 .. xmax-1``. In our convention the
0-based pixel ``j`` spans ``[j, j+1)``, so the box spans ``[xmin-1, xmax)``::

    x0 = xmin - 1    y0 = ymin - 1    x1 = xmax    y1 = ymax

A full-image box ``(1, 1, W, H)`` becomes ``(0, 0, W, H)``, and a one-pixel box ``xmin == xmax`` has width 1.

Validation (never silently wrong labels):

* malformed XML, a missing ``<name>``/``<bndbox>``/coordinate, a non-numeric or non-finite coordinate, an unknown
  class (unless ``unknown="skip"``, which logs a warning and drops the object), or an inverted box
  (``xmax < xmin``) raise ``ValueError`` naming the file;
* a box partly outside the image is clamped to ``[0, W] × [0, H]``, logged as a warning naming the file (logger
  ``midlevel_fast.datasets.voc``); a box wholly outside (empty after clamping) raises ``ValueError``;
* a missing JPEG raises ``FileNotFoundError`` naming it;
* ``<difficult>`` and ``<truncated>`` default to false when absent, as the devkit's ``VOCreadrecxml.m`` does;
* the image size comes from ``<size>``; when it is absent, zero or not a number it is read from the JPEG header
  (Pillow opens the file lazily, so only the header is read).
"""
from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image

from midlevel_fast.io.text_input import read_user_text

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

_log = logging.getLogger(__name__)


@dataclass
class VocObject:
    """One annotated object; ``box`` is ``(x0, y0, x1, y1)`` in continuous pixel coordinates (see module doc)."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool
    truncated: bool


@dataclass
class VocImage:
    """One annotated image: ``path`` is its JPEG, ``width``/``height`` in pixels."""

    image_id: str
    path: Path
    width: int
    height: int
    objects: list[VocObject] = field(default_factory=list)


def _check_root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VOC root {str(root)!r} is not a directory (expected e.g. VOCdevkit/VOC2012)")
    return root


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Image ids listed in ``root/ImageSets/Main/{split}.txt``, in file order.

    Only the first token of each line is used, so per-class lists (``cat_train.txt``: ``id  ±1``) also work.
    Raises ``FileNotFoundError`` naming the missing root or list, ``ValueError`` on a repeated id (it would be
    counted twice by the metrics).
    """
    path = _check_root(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem)
        raise FileNotFoundError(f"VOC split list {str(path)!r} not found (available: {', '.join(available) or 'none'})")
    ids = [line.split()[0] for line in read_user_text(path, str(path)).splitlines() if line.strip()]
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            raise ValueError(f"{path}: image id {image_id!r} is listed more than once")
        seen.add(image_id)
    return ids


def _text(elem: ET.Element, tag: str, xml_path: Path) -> str:
    text = elem.findtext(tag)
    if text is None or not text.strip():
        raise ValueError(f"{xml_path}: missing field <{tag}> in <{elem.tag}>")
    return text.strip()


def _flag(obj: ET.Element, tag: str, xml_path: Path) -> bool:
    text = (obj.findtext(tag) or "").strip()
    if text not in ("", "0", "1"):
        raise ValueError(f"{xml_path}: <{tag}> must be 0 or 1, got {text!r}")
    return text == "1"


def finite_number(text: str, field: str, where: str | Path) -> float:
    """``text`` as a finite float; ``ValueError`` ``"<where>: <field> is not a number/finite: ..."`` otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {field} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {field} is not finite: {text!r}")
    return value


def _coordinate(bndbox: ET.Element, tag: str, xml_path: Path) -> float:
    return finite_number(_text(bndbox, tag, xml_path), f"<{tag}>", xml_path)


def _image_size(root_elem: ET.Element, jpeg: Path, xml_path: Path) -> tuple[int, int]:
    size = root_elem.find("size")
    if size is not None:
        try:
            w, h = int(float(size.findtext("width") or 0)), int(float(size.findtext("height") or 0))
        except (ValueError, OverflowError):  # OverflowError: an infinite size ("1e400"); read it from the image
            w = h = 0
        if w > 0 and h > 0:
            return w, h
    try:
        with Image.open(jpeg) as im:
            return im.size
    except OSError as e:  # UnidentifiedImageError included: a corrupt JPEG, read only when the XML gives no size
        raise ValueError(f"{xml_path}: no usable <size>, and the image {jpeg} cannot be read ({e})") from None


def _box(obj: ET.Element, width: int, height: int, xml_path: Path,
         clamp: bool = True) -> tuple[float, float, float, float]:
    """The object's box in our convention; one leaving the image is clamped (logged) or, with ``clamp=False``,
    refused with ``ValueError``. Either way a box wholly outside the image is refused."""
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise ValueError(f"{xml_path}: missing field <bndbox> in <object>")
    xmin, ymin, xmax, ymax = (_coordinate(bndbox, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin or ymax < ymin:
        raise ValueError(f"{xml_path}: inverted box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}")
    raw = (xmin - 1.0, ymin - 1.0, xmax, ymax)
    box = (max(raw[0], 0.0), max(raw[1], 0.0), min(raw[2], float(width)), min(raw[3], float(height)))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"{xml_path}: box {raw} lies outside the {width}x{height} image")
    if box != raw:
        if not clamp:
            raise ValueError(f"{xml_path}: box {raw} leaves the {width}x{height} image (boxes are not clipped)")
        _log.warning("%s: box %s leaves the %dx%d image; clamped to %s", xml_path, raw, width, height, box)
    return box


def open_annotation(root: str | os.PathLike, image_id: str) -> tuple[Path, Path, ET.Element, int, int]:
    """``(xml_path, jpeg, parsed root element, width, height)`` of ``image_id``'s annotation under the VOC ``root``.
    ``FileNotFoundError`` for a missing XML or image, ``ValueError`` naming the XML when it is malformed."""
    root = _check_root(root)
    xml_path = root / "Annotations" / f"{image_id}.xml"
    jpeg = root / "JPEGImages" / f"{image_id}.jpg"
    if not xml_path.is_file():
        raise FileNotFoundError(f"annotation {str(xml_path)!r} not found")
    if not jpeg.is_file():
        raise FileNotFoundError(f"image {str(jpeg)!r} not found (annotated in {xml_path})")
    try:
        tree = ET.parse(xml_path).getroot()
    except (ET.ParseError, LookupError) as e:  # LookupError: the XML declares an encoding Python does not know
        raise ValueError(f"{xml_path}: malformed XML: {e}") from None
    return xml_path, jpeg, tree, *_image_size(tree, jpeg, xml_path)


def read_annotation(
    root: str | os.PathLike,
    image_id: str,
    classes: Sequence[str] = VOC_CLASSES,
    unknown: Literal["error", "skip"] = "error",
) -> VocImage:
    """Parse ``root/Annotations/{image_id}.xml`` for the image ``root/JPEGImages/{image_id}.jpg``.

    Object names must be in ``classes``; with ``unknown="skip"`` other objects are dropped instead of raising, a
    warning logged for each. See the module docstring for the box conversion and the validation rules.
    """
    if unknown not in ("error", "skip"):
        raise ValueError(f"unknown must be 'error' or 'skip', got {unknown!r}")
    xml_path, jpeg, tree, width, height = open_annotation(root, image_id)
    known = set(classes)
    objects = []
    for obj in tree.findall("object"):
        name = _text(obj, "name", xml_path)
        if name not in known:
            if unknown == "error":
                raise ValueError(f"{xml_path}: unknown class {name!r} (known: {', '.join(classes)})")
            _log.warning("%s: skipping object of unknown class %r", xml_path, name)
            continue
        objects.append(VocObject(name, _box(obj, width, height, xml_path), _flag(obj, "difficult", xml_path),
                                 _flag(obj, "truncated", xml_path)))
    return VocImage(image_id, jpeg, width, height, objects)


def load_split(
    root: str | os.PathLike,
    split: str,
    classes: Sequence[str] = VOC_CLASSES,
    unknown: Literal["error", "skip"] = "error",
) -> list[VocImage]:
    """:func:`read_annotation` for every id of :func:`read_split`, in list order."""
    return [read_annotation(root, image_id, classes, unknown) for image_id in read_split(root, split)]


def image_labels(img: VocImage, classes: Sequence[str] = VOC_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """VOC classification ground truth of one image: ``(positives, ignore)``, both bool ``(C,)``.

    As the devkit: a class with at least one non-difficult object is positive; a class present only as difficult
    objects is ignored (neither positive nor negative) for this image; an absent class is negative.
    """
    index = {name: i for i, name in enumerate(classes)}
    positives = np.zeros(len(classes), dtype=bool)
    present = np.zeros(len(classes), dtype=bool)
    for obj in img.objects:
        if obj.name not in index:
            raise ValueError(f"{img.image_id}: object class {obj.name!r} is not in classes")
        present[index[obj.name]] = True
        positives[index[obj.name]] |= not obj.difficult
    return positives, present & ~positives


def object_arrays(
    img: VocImage, classes: Sequence[str] = VOC_CLASSES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The objects of ``img`` as tensors for :func:`midlevel_fast.training.labels.patch_labels`: boxes float64
    ``(M, 4)``, class indices int64 ``(M,)`` into ``classes``, difficult flags bool ``(M,)``."""
    index = {name: i for i, name in enumerate(classes)}
    missing = [o.name for o in img.objects if o.name not in index]
    if missing:
        raise ValueError(f"{img.image_id}: object classes {missing} are not in classes")
    boxes = torch.tensor([o.box for o in img.objects], dtype=torch.float64).reshape(-1, 4)
    labels = torch.tensor([index[o.name] for o in img.objects], dtype=torch.int64)
    difficult = torch.tensor([o.difficult for o in img.objects], dtype=torch.bool)
    return boxes, labels, difficult
