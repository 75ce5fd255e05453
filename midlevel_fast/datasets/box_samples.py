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
* COCO JSON (:func:`~midlevel_fast.datasets.coco.coco_samples`, its layout and checks there): the boxes of
  ``annotations`` (crowds skipped), images relative to the JSON's folder.

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
import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np

from midlevel_fast.datasets.box_checks import (Box, BoxSample, SampleIds, box_digest, check_box, check_label,
                                              finish_samples, oriented_size)
from midlevel_fast.datasets.coco import coco_samples
from midlevel_fast.datasets.tags import imagefolder_tags, is_user_file
from midlevel_fast.datasets.voc import _box, _check_root, finite_number, open_annotation
from midlevel_fast.io.text_input import read_user_text

BOX_FORMATS: tuple[str, ...] = ("voc-action", "imagefolder", "csv", "coco")
CSV_HEADER: tuple[str, ...] = ("path", "x0", "y0", "x1", "y1", "label")

_log = logging.getLogger(__name__)


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
    ids, samples = SampleIds(), []
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
            label = check_label(actions[0], known, classes, where)
            samples.append(BoxSample(ids(jpeg, box), jpeg, box, label, where))
    if several or none:
        _log.warning("%s %r: excluded %d person(s) with several actions and %d with none (a sample has exactly one "
                     "action)", root, split, several, none)
    return finish_samples(samples, classes, root / "ImageSets" / "Action" / f"{split}.txt")


def imagefolder_samples(root: str | Path, split: str,
                        classes: Sequence[str] | None = None) -> tuple[list[BoxSample], list[str]]:
    """The images of ``root/<split>/<Class>/*`` as whole-image samples (box ``None``; ``where`` is the image
    path), and the classes (:func:`~midlevel_fast.datasets.tags.imagefolder_tags`' rules and errors)."""
    images, names = imagefolder_tags(root, split, classes)
    samples = [BoxSample(f"{img.image_id}-{box_digest(None)}", img.path, None, img.tags[0], str(img.path))
               for img in images]
    return finish_samples(samples, names, Path(root) / split)


def csv_samples(path: str | Path, classes: Sequence[str] | None = None) -> tuple[list[BoxSample], list[str]]:
    """The boxes of a CSV file ``path,x0,y0,x1,y1,label`` (blank lines skipped; ``where`` is ``<csv>:<line>``),
    and the classes (``classes`` when given, else the sorted labels)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    known = set(classes) if classes is not None else None
    ids, sizes, samples = SampleIds(), {}, []
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
        check_label(label, known, classes, where)
        image = Path(name) if Path(name).is_absolute() else path.parent / name
        if not is_user_file(image):
            raise ValueError(f"{where}: image {image} not found")
        if image not in sizes:
            sizes[image] = oriented_size(image, where)
        check_box(box, *sizes[image], where, image)
        samples.append(BoxSample(ids(image, box), image, box, label, where))
    return finish_samples(samples, classes, path)


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
