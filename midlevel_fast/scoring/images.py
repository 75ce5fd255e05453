"""``score_images``: many images scored with their dense planes batched across images.

:func:`midlevel_fast.scoring.score.score_image` runs the trunk once per scale of one image: nine planes of
different sizes, each a batch of one. Here the images come in chunks of ``batch_images``; every plane of a chunk is
grouped with the planes of the same ``(rows, cols)`` (the same scale of images of the same size, and whatever
other scale or image happens to round to that size), and each group runs through the trunk and the window head in
one call (:func:`midlevel_fast.features.dense.plane_features`, the function ``dense_windows`` runs on one plane).
The rest of each image's result is :func:`midlevel_fast.scoring.score.features_result`, as in ``score_image``, so
the results are ``score_image``'s image by image: the trunk is applied to each plane of a batch independently, and
only the rounding of the batched convolutions may differ (float32: ~1e-6; bf16: see ``tests/test_images.py``).

Pipeline: a pool of ``workers`` threads decodes the images (:func:`midlevel_fast.io.image_io.load_image`) and
checks them (too small, too elongated) one chunk ahead of the trunk. Threads rather than processes: Pillow's decoders
and the crop_resize kernel release the GIL, and a thread hands over the decoded array without pickling it. On a
GPU the decoded images are pinned and uploaded, and their planes resized there, as ``score_image`` does (one
uint8 image crosses the bus, not nine float planes); on the CPU the workers also resize the planes of the next
group while the trunk runs on the current one.
"""
from __future__ import annotations

import os
import time
from functools import partial
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.backbones.prepared import prepared
from midlevel_fast.io.image_io import load_image
from midlevel_fast.model.classifier import PatchClassifier
from midlevel_fast.features.dense import (MAX_DENSE_PIXELS, DensePlan, DenseWindows, dense_plan, dense_source,
                                         join_windows, plane_trunk, plane_windows, resize_plane,
                                         window_step_cells)
from midlevel_fast.features.limits import check_image_size
from midlevel_fast.features.roi import PyramidMaps
from midlevel_fast.runtime.malloc import tune_malloc
from midlevel_fast.runtime.precision import Precision, resolve_precision
from midlevel_fast.scoring.options import DEFAULTS, Mode, ScoreOptions
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.scoring.score import checked_call, features_result, score_decoded

# Pixels of one trunk call: a group of same-size planes is split into batches of at most this many pixels (at
# least one plane), so that a batch never needs more activation memory than the largest plane one image may have.
MAX_BATCH_PIXELS = MAX_DENSE_PIXELS
# Images per chunk for batch_images=None. On a GPU, many planes per launch (the GPU figures are for a lent GPU to
# measure: benchmarks/bench_gpu.py). On the CPU one: on 2 AMD EPYC cores (shared with other work,
# OMP_WAIT_POLICY=PASSIVE, 4 VOC 500x375 images, medians of 3-4 rounds) stacking the planes of several images was
# slower, fp32 7.96 s at 1 image per chunk, 9.20 s at 2, 12.98 s at 4; bf16 3.80 s at 1, 4.26 s at 4 (score_image
# one by one: 8.54 s, 3.71 s): larger batches push Lite0's activations out of the caches (as for its CPU
# patch batch, Backbone.batch_size).
GPU_BATCH_IMAGES = 8
CPU_BATCH_IMAGES = 1
# Decoding threads by default: enough to keep ahead of the trunk on a GPU, few enough not to crowd a small CPU.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)

T = TypeVar("T")


@dataclass
class _Decoded:
    """One decoded and checked image: its index in ``images``, the array (RGB uint8 HWC; pinned on a GPU run) and
    its dense plan (``None`` in the modes that do not use one)."""

    index: int
    image: np.ndarray | torch.Tensor
    plan: DensePlan | None

    def dense(self) -> DensePlan:
        """The dense plan; ``RuntimeError`` when the image was decoded for another mode."""
        if self.plan is None:
            raise RuntimeError(f"images[{self.index}] was decoded without a dense plan")
        return self.plan

    def array(self) -> np.ndarray:
        """The image as a numpy array; ``RuntimeError`` for a pinned tensor (decoded for the dense mode)."""
        if not isinstance(self.image, np.ndarray):
            raise RuntimeError(f"images[{self.index}] was decoded as a pinned tensor, for the dense mode")
        return self.image


def _named(images: Sequence[Any], index: int, error: Exception) -> str:
    """``error``'s message about ``images[index]`` prefixed with ``images[i]``, and with the path when the image
    is a file the message does not name yet (load_image's errors name it, the dense mode's do not)."""
    item = images[index]
    path = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
    named = f"images[{index}] ({path!r})" if path is not None and path not in str(error) else f"images[{index}]"
    return f"{named}: {error}"


def _chunks(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def _prefetched(pool: ThreadPoolExecutor | None, jobs: Sequence[Callable[[], T]]) -> Iterator[T]:
    """The results of ``jobs`` in order, each job started on ``pool`` while the one before it is consumed (one
    ahead: bounded memory); inline without a pool."""
    if pool is None:
        yield from (job() for job in jobs)
        return
    ahead: Future | None = pool.submit(jobs[0]) if jobs else None
    for i in range(len(jobs)):
        current = ahead
        if current is None:
            raise RuntimeError(f"job {i} of {len(jobs)} was never submitted")
        ahead = pool.submit(jobs[i + 1]) if i + 1 < len(jobs) else None
        yield current.result()


def _same_size_batches(plans: Sequence[DensePlan]) -> list[list[tuple[int, int]]]:
    """The trunk calls of a chunk: lists of ``(image in chunk, scale)`` whose planes have the same size, at most
    :data:`MAX_BATCH_PIXELS` pixels per call (at least one plane), largest planes first."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for j, plan in enumerate(plans):
        for s, hw in enumerate(plan.planes):
            groups.setdefault(hw, []).append((j, s))
    batches = []
    for (hr, wr), members in sorted(groups.items(), key=lambda kv: -kv[0][0] * kv[0][1]):
        per_call = max(1, MAX_BATCH_PIXELS // (hr * wr))
        batches += [members[i: i + per_call] for i in range(0, len(members), per_call)]
    return batches


def score_images(
    images: Sequence[Any],
    model: PatchClassifier | None = None,
    *,
    mode: Mode = DEFAULTS.mode,
    k: float | None = DEFAULTS.k,
    return_maps: bool | int = DEFAULTS.return_maps,
    batch_images: int | None = None,
    device: str | torch.device | None = DEFAULTS.device,
    window_step: int | None = DEFAULTS.window_step,
    precision: Precision = DEFAULTS.precision,
    detection_threshold: float = DEFAULTS.detection_threshold,
    workers: int | None = None,
) -> list[ScoreResult]:
    """Scores every image of ``images`` with ``model``: one :class:`~midlevel_fast.scoring.result.ScoreResult` per
    image, in order, equal to :func:`~midlevel_fast.scoring.score.score_image`'s with the same arguments (to the
    rounding of batched convolutions: module docstring).

    ``images``: a sequence of what ``score_image`` takes (paths, PIL images, numpy HWC arrays, torch CHW tensors;
    :func:`midlevel_fast.io.image_io.load_image`). ``mode="dense"`` batches the planes of ``batch_images`` images
    at a time across images (module docstring; ``None``: :data:`GPU_BATCH_IMAGES` on a GPU,
    :data:`CPU_BATCH_IMAGES` on the CPU, where batching across images was measured slower); ``"batched"`` and
    ``"naive"`` score image by image through ``score_image``'s path, only the decoding running ahead on the
    workers: their grid patches are already batched within one image (512 patches of 224², more than a GPU
    batch). ``workers``: decoding threads (``None``: :data:`DEFAULT_WORKERS`; ``0``: decode in the calling
    thread). The other keyword arguments are the fields of :class:`midlevel_fast.scoring.options.ScoreOptions`
    (described and checked there), as for ``score_image``.

    ``seconds`` of each result is its share of its chunk's wall time (the chunk's time over its images).
    Raises ``ValueError`` for an empty ``images``, a single image passed instead of a sequence (``TypeError``),
    bad arguments, and, prefixed with ``images[i] ('path')``, the error of an image that cannot be decoded
    (``FileNotFoundError`` for a missing file) or is too small or, in dense mode, too elongated; the images of
    the chunks before it have been scored, none is returned.
    """
    images, n_workers = _checked_sequence(images, batch_images, workers)
    options = ScoreOptions(mode=mode, k=k, return_maps=return_maps, device=device, window_step=window_step,
                           precision=precision, detection_threshold=detection_threshold)
    tune_malloc()
    model, kk, dev = checked_call(model, options)
    if batch_images is None:
        batch_images = GPU_BATCH_IMAGES if dev.type == "cuda" else CPU_BATCH_IMAGES
    decoder = _Decoder(images, model, mode == "dense", window_step, pin=mode == "dense" and dev.type == "cuda")
    if mode == "dense":
        window_step_cells(decoder.backbone, model.info.grid_step, window_step)  # refused before any decoding
        run = resolve_precision(precision, mode, dev)
    results: list[ScoreResult] = []
    pool = ThreadPoolExecutor(n_workers, thread_name_prefix="score_images") if n_workers else None
    try:
        chunks = [partial(decoder.chunk, c) for c in _chunks(len(images), int(batch_images))]
        for decoded in _prefetched(pool, chunks):
            t0 = time.perf_counter()
            if mode == "dense":
                with torch.inference_mode():
                    windows = _dense_chunk(decoder.backbone, decoded, run, dev, pool,
                                           keep_maps=model.info.detector is not None)
                scored = [features_result(model, *win, (d.dense().height, d.dense().width), options, kk, dev,
                                          pyramid=pyramid) for d, (win, pyramid) in zip(decoded, windows)]
            else:
                scored = [score_decoded(model, d.array(), images[d.index], options, kk, dev, t0) for d in decoded]
            share = (time.perf_counter() - t0) / len(scored)
            results += [replace(r, seconds=share) for r in scored]
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def _checked_sequence(images: Sequence[Any], batch_images: int | None,
                      workers: int | None) -> tuple[list[Any], int]:
    """``(images as a list, decoding threads)``, refusing a single image, an empty sequence and bad counts."""
    if isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor, Image.Image)):
        raise TypeError(f"score_images takes a sequence of images, got one {type(images).__name__}; "
                        "use score_image for a single image or pass [image]")
    images = list(images)
    if not images:
        raise ValueError("score_images got no images: pass a non-empty sequence of paths, PIL images or arrays")
    if batch_images is not None and int(batch_images) < 1:
        raise ValueError(f"batch_images must be >= 1, got {batch_images!r}")
    n_workers = DEFAULT_WORKERS if workers is None else int(workers)
    if n_workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers!r}")
    return images, n_workers


class _Decoder:
    """Decodes and checks the images of ``score_images`` (on the worker threads): each image read, refused when
    too small (or in dense mode too elongated, by its plan) with the image named, and pinned for a GPU upload."""

    def __init__(self, images: list[Any], model: PatchClassifier, dense: bool, window_step: int | None,
                 pin: bool) -> None:
        self.images, self.model, self.dense, self.window_step, self.pin = images, model, dense, window_step, pin
        # With a ROI detector the dense mode's detections come from the trunk maps, not the windows' layout.
        self.backbone = model.backbone if dense and model.info.detector is not None else model.regression_backbone()

    def one(self, index: int) -> _Decoded:
        scales, step = self.model.info.scales, self.model.info.grid_step
        try:
            img = load_image(self.images[index])
            h, w = img.shape[:2]
            check_image_size(w, h, scales, self.model.backbone, self.images[index])
            plan = dense_plan(self.backbone, h, w, scales, step, self.window_step) if self.dense else None
        except (ValueError, OSError) as e:
            # The type load_image or the checks raised (a missing file stays FileNotFoundError), with the image named.
            kind = type(e) if type(e) in (ValueError, FileNotFoundError, IsADirectoryError) else ValueError
            raise kind(_named(self.images, index, e)) from e
        # Pinned, the upload to the GPU is a direct DMA that need not wait for the work queued before it.
        return _Decoded(index, torch.from_numpy(img).pin_memory() if self.pin else img, plan)

    def chunk(self, indices: range) -> list[_Decoded]:
        return [self.one(i) for i in indices]


def _dense_chunk(backbone: BackboneLike, decoded: Sequence[_Decoded], precision: str, device: torch.device,
                 pool: ThreadPoolExecutor | None, keep_maps: bool = False
                 ) -> list[tuple[DenseWindows, PyramidMaps | None]]:
    """The dense windows of every image of a chunk, with one trunk + window head call per batch of same-size
    planes (:func:`_same_size_batches`); per image the same windows, in the same order, as
    :func:`midlevel_fast.features.dense.dense_windows`, and with ``keep_maps`` its trunk maps as
    :func:`midlevel_fast.features.roi.image_maps` gives them (for the ROI detector), else ``None``."""
    net = prepared(backbone, precision)
    plans = [d.dense() for d in decoded]
    sources = [dense_source(d.image, device) for d in decoded]
    batches = _same_size_batches(plans)

    def stack(members: list[tuple[int, int]]) -> torch.Tensor:
        return torch.cat([resize_plane(backbone, sources[j], plans[j], s) for j, s in members])

    # On a GPU the planes are resized there, asynchronously on the stream the trunk follows: no thread is needed.
    on_workers = pool if device.type != "cuda" else None
    per_image: list[dict[int, DenseWindows]] = [{} for _ in decoded]
    maps: list[dict[int, torch.Tensor]] = [{} for _ in decoded]
    planes = _prefetched(on_workers, [partial(stack, m) for m in batches])
    for members, batch in zip(batches, planes):
        cells = plane_trunk(net, batch)
        feats = net.window_head(cells, plans[0].step_cells).float()
        for i, ((j, s), f) in enumerate(zip(members, feats)):
            per_image[j][s] = plane_windows(backbone, f, plans[j], s)
            if keep_maps:
                maps[j][s] = cells[i].float().contiguous()
    return [(join_windows([wins[s] for s in range(len(wins))]),
             PyramidMaps(net, plan, [m[s] for s in range(len(m))]) if keep_maps else None)
            for wins, m, plan in zip(per_image, maps, plans)]
