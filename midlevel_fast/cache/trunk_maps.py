"""A disk cache of images' trunk maps (:func:`midlevel_fast.features.roi.image_maps`), for training the ROI
detector: the trunk runs once per image and scale, and every later fit (another setting, a resumed run) pools its
boxes from the stored maps.

Layout: ``<base>/trunk_maps/<backbone>-<precision>-<key>/<image_id>.pt``, ``key`` a digest of the scales, grid
step and window step, so different settings never share a directory. Each file holds the decoded image's
``(height, width)`` and its planes' maps as float16 (``(D, h, w)`` each; about 10 MB for a 500×375 image on
EfficientNet-Lite0), written atomically: a killed run resumes where it stopped. The plan is rebuilt from the size
(:func:`midlevel_fast.features.dense.dense_plan`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from midlevel_fast.backbones.base import Backbone
from midlevel_fast.backbones.prepared import prepared
from midlevel_fast.cache.build import default_cache_root
from midlevel_fast.features.dense import dense_plan
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP
from midlevel_fast.features.roi import PyramidMaps, image_maps
from midlevel_fast.io.files import atomic_write
from midlevel_fast.io.image_io import load_image


class TrunkMapsCache:
    """The maps of ``backbone`` (registry name ``name``) at ``precision`` over ``scales``/``grid_step``/
    ``window_step`` (as :func:`image_maps` takes them), under ``base`` (``None``: ``$MIDLEVEL_FAST_CACHE`` or
    ``~/.cache/midlevel_fast``)."""

    def __init__(self, backbone: Backbone, name: str, base: str | os.PathLike | None = None,
                 precision: str = "bf16", scales: Sequence[float] = PAPER_SCALES, grid_step: float = PAPER_STEP,
                 window_step: int | None = None) -> None:
        self.backbone, self.precision = backbone, precision
        self.scales, self.grid_step, self.window_step = tuple(scales), grid_step, window_step
        key = json.dumps({"scales": list(self.scales), "grid_step": grid_step, "window_step": window_step})
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.root = Path(base) if base is not None else default_cache_root()
        self.root = self.root / "trunk_maps" / f"{name}-{precision}-{digest}"

    def path(self, image_id: str) -> Path:
        """The file of ``image_id``'s maps."""
        return self.root / f"{image_id}.pt"

    def maps(self, image_id: str, image: Any) -> PyramidMaps:
        """The maps of ``image`` (what :func:`~midlevel_fast.io.image_io.load_image` reads; decoded only when they
        are not cached yet), float32; computed and stored on a miss. A cache file that cannot be read is
        recomputed."""
        path = self.path(image_id)
        if path.exists():
            try:
                stored = torch.load(path)
                height, width = stored["size"]
                plan = dense_plan(self.backbone, height, width, self.scales, self.grid_step, self.window_step)
                maps = [m.float() for m in stored["maps"]]
                if len(maps) == len(plan.planes):
                    return PyramidMaps(prepared(self.backbone, self.precision), plan, maps)
            except Exception:  # noqa: BLE001 - torch.load of a damaged file raises anything from IndexError to
                pass  # UnpicklingError: whatever it is, the maps are computed again below and the file replaced
        with torch.inference_mode():
            pyramid = image_maps(self.backbone, load_image(image), self.scales, self.grid_step, self.window_step,
                                 self.precision)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"size": (pyramid.plan.height, pyramid.plan.width), "maps": [m.half() for m in pyramid.maps]}
        atomic_write(path, lambda tmp: torch.save(record, tmp))
        return pyramid
