"""Heat-map overlays: an output map blended over its image, with the class and score written on it, and the
files they are written to (one naming scheme for ``score --maps`` and ``score-dir --maps``)."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from midlevel_fast.io.files import atomic_write_bytes

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


def overlay(image: np.ndarray, heat: torch.Tensor, caption: str, alpha: float = 0.55) -> Image.Image:
    """``image`` RGB uint8 HWC with ``heat (H, W)`` (probabilities, scaled to their max) blended on top and
    ``caption`` in the corner."""
    h = heat.detach().cpu().double().numpy()
    peak = h.max() if h.size and h.max() > 0 else 1.0
    colored = colorize(h / peak).astype(np.float64)
    mixed = np.rint(image.astype(np.float64) * (1 - alpha) + colored * alpha).astype(np.uint8)
    im = Image.fromarray(mixed)
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((4, 4), caption)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 4), caption, fill=(255, 255, 255))
    return im


def save_png(im: Image.Image, path: str | os.PathLike) -> None:
    """Writes ``im`` as PNG atomically."""
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def map_file_name(key: str, place: int, class_name: str) -> str:
    """The flat file name of the map of the ``place``-th best class of the image called ``key`` (a path, ``/``
    separated, or any name): ``<key>_<place>_<class>.png`` with ``/`` as ``__`` and other unsafe characters as
    ``_``, so images of one stem in other folders or with other suffixes get other names, and none is hidden (no
    leading dot). The class name is shortened to 40 characters; the place keeps names apart where class names
    repeat (ImageNet has two "crane")."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key.replace("/", "__")).lstrip(".")
    return f"{stem}_{place}_{re.sub(r'[^A-Za-z0-9]+', '_', class_name).strip('_')[:40] or 'class'}.png"


def write_maps(image: np.ndarray, maps: torch.Tensor, top: Sequence[tuple[str, float]], folder: str | os.PathLike,
               key: str) -> list[str]:
    """Writes one overlay PNG per map of ``maps (n, H, W)`` over ``image`` (RGB uint8 HWC) into ``folder``, the
    ``i``-th captioned with the ``i``-th ``(class, score)`` of ``top`` (best first, as the maps come) and named by
    :func:`map_file_name`; returns the file names, in order."""
    names = []
    for place, ((cls, score), heat) in enumerate(zip(top, maps), 1):
        names.append(map_file_name(key, place, cls))
        save_png(overlay(image, heat, f"{cls}: {score:.3f}"), Path(folder) / names[-1])
    return names
