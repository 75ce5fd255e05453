"""``mode="batched"``: the paper's grid patches cropped and resized by the fused :func:`crop_resize`, in chunks,
and run through the backbone as batches. The exact per-patch path, fast (see :mod:`midlevel_fast.scoring.naive`
for the same patches one PIL crop and one forward at a time)."""
from __future__ import annotations

import logging
import sys
from typing import Sequence

import numpy as np
import torch

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.backbones.prepared import copy_dtype, prepared
from midlevel_fast.ops.crop_resize import crop_resize
from midlevel_fast.runtime.progress import progress_bar, progress_wanted
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP, grid

log = logging.getLogger(__name__)

# Patches per forward pass on a GPU: large enough to amortise Lite0's hundred kernel launches per pass, small
# enough (about 0.1 GB of patches and a few GB of activations) for any recent card.
GPU_BATCH = 128
# progress=None shows a bar over the chunks only for an image with more patches than this (4x the paper's 512 of a
# VOC photo: tens of seconds on a CPU), only when standard error is a terminal, so tests, CI and logs stay quiet,
# and only where this module's logger is enabled for INFO (midlevel_fast.runtime.progress).
PROGRESS_MIN_PATCHES = 2048


def show_progress(progress: bool | None, patches: int) -> bool:
    """Whether to show a progress bar over ``patches``: ``progress`` when given, else (auto) for more than
    :data:`PROGRESS_MIN_PATCHES` patches when standard error is a terminal and this module's logger is enabled for
    INFO."""
    if progress is not None:
        return bool(progress)
    if not progress_wanted(log, None):
        return False
    try:
        tty = sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        tty = False
    return tty and patches > PROGRESS_MIN_PATCHES


def batched_features(backbone: BackboneLike, image: np.ndarray, boxes: torch.Tensor, batch: int | None = None,
                     device: torch.device | None = None, progress: bool | None = None,
                     precision: str = "fp32") -> torch.Tensor:
    """Mid-level vectors ``(M, F)`` of ``boxes`` of ``image`` (RGB uint8 HWC): fused crop_resize in chunks of
    ``batch`` into one reused buffer, then a batched forward, so memory stays bounded whatever ``M``.

    ``backbone`` follows :class:`midlevel_fast.backbones.Backbone`; ``device`` defaults to its parameters'. The
    default ``batch`` is the backbone's fastest on a CPU, :data:`GPU_BATCH` on a GPU. On a GPU the image is
    uploaded once and cropped there (backend ``"auto"``), so only the image crosses the bus, not the patches.
    ``progress``: a tqdm bar over the patches on standard error, updated per chunk: ``True``, ``False``, or
    ``None`` for :func:`show_progress`'s rule (long images on a terminal only). ``precision``: ``"fp32"``,
    ``"bf16"`` or ``"int8"``, the backbone's prepared copy that runs
    (:func:`midlevel_fast.backbones.prepared.prepared`); the vectors come back float32 either way."""
    bb = prepared(backbone, precision)
    dtype = copy_dtype(bb)
    device = next(bb.parameters()).device if device is None else device
    on_gpu = device.type == "cuda"
    batch = (GPU_BATCH if on_gpu else bb.batch_size) if batch is None else batch
    source = torch.from_numpy(np.ascontiguousarray(image)).to(device) if on_gpu else image
    size = bb.input_size
    buffer = torch.empty((min(batch, len(boxes)), 3, size, size), device=device if on_gpu else "cpu")
    feats = []
    with progress_bar(log, show_progress(progress, len(boxes)), total=len(boxes), unit="patch", desc="patches",
                      leave=False) as bar:
        for start in range(0, len(boxes), batch):
            chunk = boxes[start: start + batch]
            out = crop_resize(source, chunk, size=size, mean=bb.mean, std=bb.std, out=buffer[: len(chunk)])
            feats.append(bb(out.to(device, dtype).contiguous(memory_format=torch.channels_last)).float())
            bar.update(len(chunk))
    return torch.cat(feats)


def batched_patches(backbone: BackboneLike, image: np.ndarray, scales: Sequence[float] = PAPER_SCALES,
                    grid_step: float = PAPER_STEP, batch: int | None = None, precision: str = "fp32",
                    progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features (M, F), boxes (M, 4), scale_index (M,))`` of the paper grid's patches of ``image`` (RGB uint8
    HWC), in the grid's order (:func:`midlevel_fast.features.grid.grid`).

    ``batch``, ``progress`` and ``precision`` as in :func:`batched_features`."""
    g = grid(image.shape[1], image.shape[0], scales, grid_step)
    feats = batched_features(backbone, image, g.boxes, batch, progress=progress, precision=precision)
    return feats, g.boxes, g.scale_index
