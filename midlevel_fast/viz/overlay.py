"""Heat-map overlays and the files they are written to: one naming scheme and one choice of classes for
``score --maps`` and ``score-dir --maps``.

Overlay (:func:`overlay`): the output map blended over its image on a FIXED probability scale, 0 (dark) to 1
(bright yellow), never scaled to the map's own maximum, so a class that is not there looks dark; a colour bar
"P(class)" with ticks 0, 0.5, 1 to the right of the image (the image keeps its pixels, at the left); the class's
point (a white-ringed cross) and its detection boxes (cyan rectangles labelled with their score) drawn on it;
the class, its presence (when the head has a calibration) and its score in the corner.

Which maps (:func:`chosen_maps`): the ``maps_for`` best classes by score when asked; else the present classes
(presence >= :data:`PRESENT`) when the head has a calibration, else the best class.

Names (:func:`map_file_name`): ``<stem>_<rank>_<class>.png``, ``rank`` 1-based by score among the classes mapped
for the image, ``stem`` from :func:`map_stem`: the image's name (``score``: the file name; ``score-dir``: the path
relative to the directory) without its suffix, ``/`` as ``__`` and other unsafe characters as ``_``.
:func:`map_stems` keeps the stems of a set of images apart where they would meet (``a.jpg`` and ``a.png``).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from midlevel_fast.io.files import atomic_write_bytes

if TYPE_CHECKING:  # only for annotations: scoring imports io, not the other way round at run time
    from midlevel_fast.scoring.result import ScoreResult

# A class is present, for the choice of maps, when its presence probability is at least this.
PRESENT = 0.5
POINT_COLOUR = (255, 255, 255)
BOX_COLOUR = (0, 255, 255)

# Control points of a perceptually ordered dark-blue -> red -> yellow ramp (close to matplotlib's "inferno").
_RAMP = np.array([
    [0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
    [252, 255, 164],
], dtype=np.float64)


def colorize(values: np.ndarray) -> np.ndarray:
    """``values`` in [0, 1] ``(H, W)`` -> RGB uint8 ``(H, W, 3)`` along the ramp."""
    v = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_RAMP) - 2)
    t = (v - lo)[..., None]
    return np.rint(_RAMP[lo] * (1 - t) + _RAMP[lo + 1] * t).astype(np.uint8)


def _font(height: int, width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at a size that grows with the image (a bitmap font where Pillow lacks FreeType)."""
    # Below 12 px FreeType's hinting drops the colons.
    return ImageFont.load_default(size=max(12, min(height, width) // 25))


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, fill, background=None) -> None:
    """``text`` with its top-left ink corner at ``xy``, on a ``background`` box when given."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    x, y = xy[0] - x0, xy[1] - y0
    if background is not None:
        draw.rectangle((xy[0] - 2, xy[1] - 2, xy[0] + x1 - x0 + 2, xy[1] + y1 - y0 + 2), fill=background)
    draw.text((x, y), text, fill=fill, font=font)


def colour_bar(height: int, font=None) -> Image.Image:
    """The colour bar of :func:`overlay`: the ramp from 0 (bottom) to 1 (top) with ticks 0, 0.5, 1, under the
    title "P(class)", on a dark grey panel ``height`` pixels high (taller when that is too short to hold it)."""
    font = ImageFont.load_default() if font is None else font
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
        return math.ceil(x1 - x0), math.ceil(y1 - y0)  # whole pixels (Pillow's bitmap and FreeType fonts give them)

    title_w, th = size("P(class)")
    pad, bar_w = max(4, th // 2), max(8, th)
    tick = max(3, bar_w // 3)
    width = max(title_w, bar_w + tick + 2 + size("0.5")[0]) + 2 * pad
    top = pad + th + pad + (th + 1) // 2  # the "1" label, centred on the bar's top, stays below the title
    height = max(height, top + 3 * th + pad)
    bottom = height - pad - (th + 1) // 2  # the last row of the bar; the "0" label stays on the panel
    panel = Image.new("RGB", (width, height), (40, 40, 40))
    ramp = colorize(np.linspace(1.0, 0.0, bottom - top + 1))[:, None, :].repeat(bar_w, axis=1)
    panel.paste(Image.fromarray(np.ascontiguousarray(ramp)), (pad, top))
    draw = ImageDraw.Draw(panel)
    draw.rectangle((pad - 1, top - 1, pad + bar_w, bottom + 1), outline=(255, 255, 255))
    _text(draw, (pad, pad), "P(class)", font, (255, 255, 255))
    for value, label in ((1.0, "1"), (0.5, "0.5"), (0.0, "0")):
        y = round(top + (1.0 - value) * (bottom - top))
        draw.line((pad + bar_w, y, pad + bar_w + tick, y), fill=(255, 255, 255))
        _text(draw, (pad + bar_w + tick + 2, y - th / 2), label, font, (255, 255, 255))
    return panel


def draw_point(draw: ImageDraw.ImageDraw, point: tuple[float, float], radius: int) -> None:
    """A white-ringed cross at ``point`` ``(x, y)`` in continuous image coordinates, with a black outline so it
    shows on bright and dark maps alike."""
    x, y = point[0] - 0.5, point[1] - 0.5  # PIL's integer coordinates are pixel centres
    r = radius
    ring = (x - r, y - r, x + r, y + r)
    draw.ellipse(ring, outline=(0, 0, 0), width=4)
    draw.ellipse(ring, outline=POINT_COLOUR, width=2)
    for width, colour in ((3, (0, 0, 0)), (1, POINT_COLOUR)):
        draw.line((x - r, y, x + r, y), fill=colour, width=width)
        draw.line((x, y - r, x, y + r), fill=colour, width=width)


def draw_box(draw: ImageDraw.ImageDraw, box: Sequence[float], score: float, font, width: int = 2) -> None:
    """A cyan rectangle on ``box`` ``(x0, y0, x1, y1)`` (continuous image coordinates) with ``score`` written in
    its top-left corner."""
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=BOX_COLOUR, width=width)
    _text(draw, (x0 + width + 2, y0 + width + 2), f"{score:.2f}", font, (0, 0, 0), background=BOX_COLOUR)


def overlay(image: np.ndarray, heat: torch.Tensor, caption: str, *, point: tuple[float, float] | None = None,
            boxes: Sequence[tuple[Sequence[float], float]] = (), alpha: float = 0.55) -> Image.Image:
    """``image`` RGB uint8 HWC with ``heat (H, W)`` (probabilities) blended on top on the fixed 0–1 scale of
    :func:`colorize` (values outside are clipped; no scaling to the map's maximum), ``caption`` in the corner,
    ``point`` ``(x, y)`` as a white-ringed cross and ``boxes`` ``[(box, score), ...]`` as labelled rectangles.
    The result is the overlay, pixel for pixel at the left, with :func:`colour_bar` to its right."""
    h, w = image.shape[:2]
    values = heat.detach().cpu().double().numpy()
    coloured = colorize(np.nan_to_num(values)).astype(np.float64)
    mixed = np.rint(image.astype(np.float64) * (1 - alpha) + coloured * alpha).astype(np.uint8)
    font = _font(h, w)
    bar = colour_bar(h, font)
    im = Image.new("RGB", (w + bar.width, max(h, bar.height)), (0, 0, 0))
    im.paste(Image.fromarray(mixed), (0, 0))
    im.paste(bar, (w, 0))
    draw = ImageDraw.Draw(im)
    line = max(2, min(h, w) // 150)
    for box, score in boxes:
        draw_box(draw, box, score, font, line)
    if point is not None and all(math.isfinite(v) for v in point):
        draw_point(draw, point, max(6, min(h, w) // 25))
    _text(draw, (4, 4), caption, font, (255, 255, 255), background=(0, 0, 0))
    return im


def save_png(im: Image.Image, path: str | os.PathLike) -> None:
    """Writes ``im`` as PNG atomically."""
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _flat(name: str) -> str:
    """``name`` as one safe, visible file-name part: ``/`` as ``__``, unsafe characters as ``_``, no leading dot."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("/", "__")).lstrip(".") or "image"


def map_stem(name: str) -> str:
    """The stem of the map files of the image called ``name`` (a ``/``-separated path or any name, e.g.
    ``demo:chelsea``): ``name`` without its suffix, flattened (``a/b/img.png`` -> ``a__b__img``; a leading dot
    dropped, so no map file is hidden). Images in other folders get other stems; images whose names differ only
    by their suffix (``a.jpg``, ``a.png``) or by unsafe characters meet: :func:`map_stems` keeps a set of them
    apart."""
    suffix = PurePosixPath(name).suffix
    return _flat(name[: len(name) - len(suffix)] if suffix else name)


def map_stems(names: Sequence[str]) -> dict[str, str]:
    """``{name: stem}`` for a set of images, all different: :func:`map_stem` where that is unique among
    ``names``, else the flattened full name (suffix kept: ``a.jpg``, ``a.png``), else that and a hash of the name.
    Deterministic: the same set of names always gets the same stems."""
    levels = {n: 0 for n in names}

    def stem(n: str) -> str:
        return (map_stem(n), _flat(n), f"{_flat(n)}-{hashlib.sha1(n.encode()).hexdigest()[:8]}")[levels[n]]

    while True:
        stems = {n: stem(n) for n in levels}
        count = Counter(stems.values())
        clash = [n for n in levels if count[stems[n]] > 1 and levels[n] < 2]
        if not clash:
            return stems
        for n in clash:
            levels[n] += 1


def map_file_name(stem: str, rank: int, class_name: str) -> str:
    """The flat file name ``<stem>_<rank>_<class>.png`` of the map of the ``rank``-th class (1-based, by score,
    among the classes mapped for the image) of the image whose :func:`map_stem` is ``stem``. The class name is
    made safe and shortened to 40 characters; the rank keeps names apart where class names repeat (ImageNet has
    two "crane")."""
    return f"{stem}_{rank}_{re.sub(r'[^A-Za-z0-9]+', '_', class_name).strip('_')[:40] or 'class'}.png"


def map_class_indices(res: ScoreResult) -> list[int]:
    """The class indices of ``res.maps``, in order (the best classes by score, as
    :func:`midlevel_fast.scoring.score.score_image` makes them)."""
    idx = torch.topk(res.scores, len(res.map_classes)).indices.tolist() if res.map_classes else []
    if [res.class_names[i] for i in idx] != list(res.map_classes):  # a result made another way: by name
        idx = [res.class_names.index(c) for c in res.map_classes]
    return idx


def chosen_maps(res: ScoreResult, maps_for: int | None = None) -> list[int]:
    """The positions in ``res.maps`` of the maps to write, best score first: the first ``maps_for`` when given;
    else those of the present classes (presence >= :data:`PRESENT`) when ``res.presence`` is not ``None`` (none
    when no class is present); else the first (the best class)."""
    n = len(res.map_classes)
    if maps_for is not None:
        return list(range(min(int(maps_for), n)))
    if res.presence is None:
        return list(range(min(1, n)))
    return [i for i, c in enumerate(map_class_indices(res)) if float(res.presence[c]) >= PRESENT]


def caption(class_name: str, score: float, presence: float | None) -> str:
    """``cat: 97.3 %, score 3.9e-03`` (``cat: score 3.9e-03`` when there is no presence)."""
    p = "" if presence is None else f"{100 * presence:.1f} %, "
    return f"{class_name}: {p}score {score:.1e}"


def write_maps(image: np.ndarray, res: ScoreResult, folder: str | os.PathLike, stem: str,
               positions: Sequence[int] | None = None) -> list[str]:
    """Writes the overlays of the maps of ``res`` at ``positions`` (default :func:`chosen_maps`) over ``image``
    (RGB uint8 HWC) into ``folder``, named ``map_file_name(stem, rank, class)`` (rank 1, 2, ... in the order of
    ``positions``, best score first); each is captioned with the class, its presence and score and shows the
    class's point and detections. Returns the file names, in order."""
    positions = chosen_maps(res) if positions is None else positions
    indices = map_class_indices(res)
    names: list[str] = []
    if res.maps is None:
        if positions:
            raise ValueError("write_maps needs a result with maps: score with return_maps=True")
        return names
    for rank, pos in enumerate(positions, 1):
        cls, c = res.map_classes[pos], indices[pos]
        presence = None if res.presence is None else float(res.presence[c])
        boxes = [(d.box, d.score) for d in res.detections if d.label == cls]
        im = overlay(image, res.maps[pos], caption(cls, float(res.scores[c]), presence), point=res.points.get(cls),
                     boxes=boxes)
        names.append(map_file_name(stem, rank, cls))
        save_png(im, Path(folder) / names[-1])
    return names
