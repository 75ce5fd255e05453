"""A box-labelled sample (:class:`BoxSample`) and the checks every box reader of
:mod:`midlevel_fast.datasets.box_samples` and :mod:`midlevel_fast.datasets.coco` applies: a box inside its
EXIF-oriented image, a known label, no sample twice and at least one. The conventions (continuous pixel
coordinates, the sample id) are :mod:`midlevel_fast.datasets.box_samples`'.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

from midlevel_fast.datasets.tags import content_id

Box = tuple[float, float, float, float]


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


class SampleIds:
    """Sample ids ``<content id>-<box digest>``, the content id computed once per image file."""

    def __init__(self) -> None:
        self._ids: dict[Path, str] = {}

    def __call__(self, path: Path, box: Box | None) -> str:
        if path not in self._ids:
            self._ids[path] = content_id(path)
        return f"{self._ids[path]}-{box_digest(box)}"


def oriented_size(path: Path, where: str) -> tuple[int, int]:
    """``(width, height)`` of the EXIF-oriented image, from the header only (orientations 5-8 swap the sides)."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(274, 1)
    except OSError as e:
        raise ValueError(f"{where}: cannot read image {path} ({e})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_box(box: Box, width: float, height: float, where: str, path: Path) -> Box:
    """``box``, refused (``ValueError`` naming ``where`` and ``path``) unless finite, not empty and inside the
    ``width`` x ``height`` image (nothing is clipped)."""
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"{where}: box {box} has a coordinate that is not finite")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{where}: empty box {box}: need x1 > x0 and y1 > y0")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"{where}: box {box} is not inside the {width:g}x{height:g} image {path} "
                         f"(0 <= x0 < x1 <= {width:g}, 0 <= y0 < y1 <= {height:g}; boxes are not clipped)")
    return box


def check_label(label: str, known: set[str] | None, classes: Sequence[str] | None, where: str) -> str:
    """``label``, refused when empty or, with ``known`` (the set of ``classes``), not one of them."""
    if not label:
        raise ValueError(f"{where}: empty label")
    if known is not None and label not in known:
        raise ValueError(f"{where}: unknown class {label!r} (known: {', '.join(classes or ())})")
    return label


def finish_samples(samples: list[BoxSample], classes: Sequence[str] | None,
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
