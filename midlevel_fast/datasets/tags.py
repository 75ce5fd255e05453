"""Image-level labels ("tags": the classes an image shows, no boxes), read from three layouts, for heads trained
with ``supervision="image"`` (:mod:`midlevel_fast.training.weak`):

* VOC (:func:`voc_tags`): a split's images with the classes of their objects, boxes ignored. A class with a
  non-difficult object is a tag; one shown only by difficult objects is *ignored* for the image (neither present
  nor absent), as the devkit does for AP;
* ImageFolder (:func:`imagefolder_tags`): ``root/<split>/<Class>/<image>``, one tag per image, the classes the
  sorted folder names;
* a list (:func:`list_tags`): CSV lines ``path,label1;label2`` (an optional header ``path,labels``) or JSON
  ``[{"path": ..., "labels": [...]}, ...]``; relative paths are taken from the list's folder. The classes are
  the sorted union of the labels unless given.

Errors (``ValueError``) name the file and the line or record: a missing image, an empty label set, an unknown
class (when the classes are given, e.g. a validation list read with the training list's classes), the same
image listed twice (by path, or by content under two paths).

Images outside VOC are identified by their content (:func:`content_id`): feature caches are shared between data
sets, so an id must never name two different images, and one image under two names has the same features.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from midlevel_fast.io.text_input import read_user_json, read_user_text
from midlevel_fast.datasets.voc import VOC_CLASSES, image_labels, load_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
TAG_FORMATS: tuple[str, ...] = ("voc", "imagefolder", "list")


@dataclass(frozen=True)
class TaggedImage:
    """One image: ``image_id`` (unique, usable as a file name), ``path``, its classes ``tags`` and the classes
    ``ignored`` for it (VOC's difficult-only)."""

    image_id: str
    path: Path
    tags: tuple[str, ...]
    ignored: tuple[str, ...] = ()


def tag_arrays(images: Sequence[TaggedImage], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``positives`` and ``ignore``, bool ``(len(images), len(classes))``; ``ValueError`` for a class not in
    ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    positives = np.zeros((len(images), len(classes)), bool)
    ignore = np.zeros_like(positives)
    for row, img in enumerate(images):
        for names, out in ((img.tags, positives), (img.ignored, ignore)):
            for name in names:
                if name not in index:
                    raise ValueError(f"{img.path}: class {name!r} is not one of the {len(classes)} classes "
                                     f"({', '.join(classes)})")
                out[row, index[name]] = True
    return positives, ignore


def voc_tags(root: str | Path, split: str, classes: Sequence[str] = VOC_CLASSES) -> list[TaggedImage]:
    """The images of VOC ``split`` (``ImageSets/Main/<split>.txt``) tagged with their objects' classes."""
    out = []
    for img in load_split(root, split, classes):
        positives, ignore = image_labels(img, classes)
        out.append(TaggedImage(img.image_id, img.path, tuple(np.asarray(classes)[positives]),
                               tuple(np.asarray(classes)[ignore])))
    return out


def content_id(path: Path) -> str:
    """``sha1-<first 16 hex digits of the SHA-1 of the file's bytes>``."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha1-{digest.hexdigest()[:16]}"


def _unique(images: list[TaggedImage], where: list[str]) -> list[TaggedImage]:
    seen: dict[str, str] = {}
    for img, place in zip(images, where):
        if img.image_id in seen:
            raise ValueError(f"{place}: {img.path} is the same image as {seen[img.image_id]}; list each image once")
        seen[img.image_id] = f"{place} ({img.path})"
    return images


def imagefolder_tags(root: str | Path, split: str,
                     classes: Sequence[str] | None = None) -> tuple[list[TaggedImage], list[str]]:
    """The images of ``root/<split>/<Class>/*`` (suffixes :data:`IMAGE_SUFFIXES`) and the classes: ``classes``
    when given (a folder of another name is an error), else the sorted folder names."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder; an ImageFolder data set has root/<split>/<class>/<image>")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise ValueError(f"{folder}: no class folders (expected {folder}/<class>/<image>)")
    known = list(classes) if classes is not None else found
    images, where = [], []
    for name in found:
        if name not in known:
            raise ValueError(f"{folder / name}: class {name!r} is not one of the {len(known)} classes "
                             f"({', '.join(known)})")
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{folder / name}: no images ({', '.join(IMAGE_SUFFIXES)})")
        images += [TaggedImage(content_id(p), p, (name,)) for p in files]
        where += [str(folder / name)] * len(files)
    return _unique(images, where), known


def _list_records(path: Path) -> list[tuple[str, str, list[str]]]:
    """``(place, image path, labels)`` per record of a CSV or JSON list."""
    if path.suffix.lower() == ".json":
        data = read_user_json(path, str(path))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of {{\"path\": ..., \"labels\": [...]}} records")
        records = []
        for i, rec in enumerate(data):
            place = f"{path} record {i}"
            if not (isinstance(rec, dict) and isinstance(rec.get("path"), str) and isinstance(rec.get("labels"), list)
                    and all(isinstance(x, str) for x in rec["labels"])):
                raise ValueError(f"{place}: expected {{\"path\": str, \"labels\": [str, ...]}}, got {rec!r}")
            # Stripped like the CSV's labels; an empty one is refused, not kept as a class named "".
            labels = [x.strip() for x in rec["labels"]]
            if "" in labels:
                raise ValueError(f"{place}: empty label in {rec['labels']!r}")
            records.append((place, rec["path"], labels))
        return records
    records = []
    for line_no, row in enumerate(csv.reader(read_user_text(path, str(path)).splitlines()), 1):
        if not row or (line_no == 1 and [c.strip().lower() for c in row] == ["path", "labels"]):
            continue
        place = f"{path} line {line_no}"
        if len(row) != 2:
            raise ValueError(f"{place}: expected 'path,label1;label2', got {len(row)} fields")
        records.append((place, row[0].strip(), [x.strip() for x in row[1].split(";") if x.strip()]))
    return records


def is_user_file(path: Path) -> bool:
    """``path.is_file()``, also ``False`` for a name the system refuses (too long: ``is_file`` raises ``OSError``)."""
    try:
        return path.is_file()
    except OSError:
        return False


def list_tags(path: str | Path, classes: Sequence[str] | None = None) -> tuple[list[TaggedImage], list[str]]:
    """The images of a CSV or JSON list (by suffix: ``.json`` is JSON, anything else CSV) and the classes:
    ``classes`` when given, else the sorted union of the labels."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    records = _list_records(path)
    if not records:
        raise ValueError(f"{path}: no images listed")
    known = set(classes) if classes is not None else None
    images, where = [], []
    for place, name, labels in records:
        if not labels:
            raise ValueError(f"{place}: {name!r} has no label; every image needs at least one class")
        image = (path.parent / name) if not Path(name).is_absolute() else Path(name)
        if not is_user_file(image):
            raise ValueError(f"{place}: image {image} not found")
        if known is not None and classes is not None and (unknown := sorted(set(labels) - known)):
            raise ValueError(f"{place}: unknown class {', '.join(map(repr, unknown))} (known: "
                             f"{', '.join(classes)})")
        images.append(TaggedImage(content_id(image), image, tuple(dict.fromkeys(labels))))
        where.append(place)
    names = list(classes) if classes is not None else sorted({t for img in images for t in img.tags})
    return _unique(images, where), names
