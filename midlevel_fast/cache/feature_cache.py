"""On-disk cache of frozen mid-level vectors: the CNN runs once per image, training then reads memory maps.

Layout of a cache directory::

    manifest.json            config (backbone, mode, scales, grid_step, window_step, feature_dim) + finished images
    images/<id>.f16.npy      float16 (N, feature_dim) mid-level vectors, memory-mapped on read
    images/<id>.meta.npz     boxes float32 (N, 4) in image coordinates, scale_index int64 (N,), size (H, W)

Every file is written to a temporary name and renamed, and an image enters the manifest only after both of
its files are in place, so a build killed at any instant (even ``kill -9``) resumes by recomputing just the
images missing from the manifest. Opening a cache whose config differs from the requested one, whose manifest has
another :data:`CACHE_FORMAT` (a cache built by another version: it must be rebuilt), or whose files disagree with
the manifest, raises ``ValueError`` naming the directory rather than mixing features.

Several writers (the ranks of a sharded build, :mod:`midlevel_fast.cache.build`): a cache opened with
``rank=r`` records the images it adds in its own ``manifest.rank<r>.json`` (same layout as ``manifest.json``,
which then only carries the config), so there is one writer per manifest file and ranks never rewrite each
other's. Every cache reads the union of all manifest files; :meth:`FeatureCache.refresh` re-reads the other
writers' files.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from midlevel_fast.io.files import atomic_write_bytes

# Version 2: the config fields grid_stride and q became grid_step and window_step.
CACHE_FORMAT = "midlevel_fast.cache/2"
# How cached patch features are computed (midlevel_fast.features.patch_features.patch_features): dense windows,
# grid crops.
CACHE_MODES: tuple[str, ...] = ("dense", "batched")
_RANK_MANIFEST = re.compile(r"manifest\.rank(\d+)\.json")


@dataclass
class CacheConfig:
    """What the cached vectors are: any difference means different features. ``mode`` is one of
    :data:`CACHE_MODES`; ``grid_step`` and ``window_step`` are
    :func:`midlevel_fast.features.patch_features.patch_features`'s."""

    backbone: str
    mode: str
    scales: list[float]
    grid_step: float
    window_step: int | None
    feature_dim: int


class CachedImage(NamedTuple):
    """One image's cached patches: ``features`` float16 memmap ``(N, F)``, ``boxes`` float32 ``(N, 4)``,
    ``scale_index`` int64 ``(N,)`` and ``size`` ``(height, width)``."""

    features: np.ndarray
    boxes: np.ndarray
    scale_index: np.ndarray
    size: tuple[int, int]


@dataclass
class _Manifest:
    format: str
    config: dict
    images: dict[str, dict] = field(default_factory=dict)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class FeatureCache:
    """A cache directory for one :class:`CacheConfig`, created if missing.

    ``rank``: ``None`` for the single writer (records go to ``manifest.json``), or the rank of one writer of a
    sharded build (records go to ``manifest.rank<rank>.json``); see the module docstring.
    """

    def __init__(self, root: str | Path, config: CacheConfig, rank: int | None = None):
        self.root = Path(root)
        self.config = config
        self.rank = rank
        self._manifest_path = self.root / "manifest.json"
        if not self._manifest_path.exists():
            # Ranks of a sharded build may all get here at once: they write the same bytes, each atomically.
            (self.root / "images").mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self._manifest_path, self._encode(_Manifest(CACHE_FORMAT, asdict(config))))
        self._own_path = self._manifest_path if rank is None else self.root / f"manifest.rank{rank}.json"
        self._own = (self._read(self._own_path) if self._own_path.exists()
                     else _Manifest(CACHE_FORMAT, asdict(config)))
        self._images: dict[str, dict] = {}
        self.refresh()
        # Temporaries of a killed writer. One writer per manifest file is assumed, and the ranks of a sharded build
        # all open the cache before any of them writes (fill_cache starts with a barrier).
        for stale in (self.root / "images").glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    @staticmethod
    def _encode(manifest: _Manifest) -> bytes:
        return json.dumps(asdict(manifest), indent=1).encode()

    def _read(self, path: Path) -> _Manifest:
        try:
            manifest = _Manifest(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"cache {self.root}: unreadable {path.name} ({e})") from None
        if manifest.format != CACHE_FORMAT:
            raise ValueError(f"cache {self.root}: {path.name} has format {manifest.format!r}, expected "
                             f"{CACHE_FORMAT!r}: it was built by another version of midlevel_fast and must be "
                             "rebuilt; delete the directory or use another one")
        if manifest.config != asdict(self.config):
            diff = {k: (manifest.config.get(k), v) for k, v in asdict(self.config).items()
                    if manifest.config.get(k) != v}
            raise ValueError(f"cache {self.root} was built with different settings (cached, requested): {diff}; "
                             "use another directory or delete it")
        return manifest

    def refresh(self) -> None:
        """Re-reads the manifest files of the other writers (this writer's own records are kept as they are)."""
        ranked = sorted((int(m.group(1)), p) for p in self.root.glob("manifest.rank*.json")
                        if (m := _RANK_MANIFEST.fullmatch(p.name)))
        images: dict[str, dict] = {}
        for path in [self._manifest_path] + [p for _, p in ranked]:
            if path != self._own_path:
                images.update(self._read(path).images)
        images.update(self._own.images)
        self._images = images

    def _write_manifest(self) -> None:
        atomic_write_bytes(self._own_path, self._encode(self._own))

    def _paths(self, image_id: str) -> tuple[Path, Path]:
        return self.root / "images" / f"{image_id}.f16.npy", self.root / "images" / f"{image_id}.meta.npz"

    @property
    def image_ids(self) -> list[str]:
        """Finished images: the other writers' (``manifest.json``, then each rank's by rank), then this writer's,
        each in the order they were added."""
        return list(self._images)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._images

    def add(self, image_id: str, features: torch.Tensor, boxes: torch.Tensor, scale_index: torch.Tensor,
            size: tuple[int, int]) -> None:
        """Stores one image's patches (features are stored as float16) and records it as finished."""
        if "/" in image_id or image_id.startswith("."):
            raise ValueError(f"image id {image_id!r} cannot be used as a file name")
        feats = features.detach().cpu().to(torch.float16).numpy()
        if feats.ndim != 2 or feats.shape[1] != self.config.feature_dim or len(boxes) != len(feats):
            raise ValueError(f"{image_id}: features {feats.shape} and boxes {tuple(boxes.shape)} do not match the "
                             f"cache's feature_dim {self.config.feature_dim}")
        fpath, mpath = self._paths(image_id)
        atomic_write_bytes(fpath, _npy_bytes(feats))
        meta = io.BytesIO()
        np.savez(meta, boxes=boxes.detach().cpu().numpy().astype(np.float32),
                 scale_index=scale_index.detach().cpu().numpy().astype(np.int64), size=np.asarray(size, np.int64))
        atomic_write_bytes(mpath, meta.getvalue())
        entry = {"n": int(feats.shape[0]), "bytes": fpath.stat().st_size}
        self._own.images[image_id] = self._images[image_id] = entry
        self._write_manifest()

    def load(self, image_id: str) -> CachedImage:
        """One finished image; ``ValueError`` when its files disagree with the manifest."""
        entry = self._images.get(image_id)
        if entry is None:
            raise KeyError(f"{image_id} is not in cache {self.root}")
        fpath, mpath = self._paths(image_id)
        try:
            feats = np.load(fpath, mmap_mode="r", allow_pickle=False)
            with np.load(mpath, allow_pickle=False) as meta:
                boxes, scale_index, size = meta["boxes"], meta["scale_index"], meta["size"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"cache {self.root}: files of {image_id} are unreadable ({e})") from None
        if (feats.shape != (entry["n"], self.config.feature_dim) or feats.dtype != np.float16
                or boxes.shape != (entry["n"], 4) or fpath.stat().st_size != entry["bytes"]):
            raise ValueError(f"cache {self.root}: files of {image_id} do not match the manifest "
                             f"({feats.shape} {feats.dtype}, expected {(entry['n'], self.config.feature_dim)})")
        return CachedImage(feats, boxes, scale_index, (int(size[0]), int(size[1])))

    def verify(self) -> None:
        """Checks every finished image against the manifest (shapes, dtypes, sizes)."""
        for image_id in self._images:
            self.load(image_id)
