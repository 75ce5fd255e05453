"""``score_image``: per-class image scores and output maps from multi-scale patches (naive, batched, dense).

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the (EXIF-oriented) image.
Probabilities come from a softmax over the head's outputs (background included when the head has one) and
only the reported classes are returned. ``score(C) = 1/M Σ_i y(C|P_i)^k``.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from midlevel_fast.io.image_io import load_image
from midlevel_fast.model.classifier import PatchClassifier, default_model
from midlevel_fast.ops.aggregate import output_maps, power_mean
from midlevel_fast.ops.backends import backends
from midlevel_fast.features.patch_features import patch_features
from midlevel_fast.scoring.detections import DETECTION_THRESHOLD, Detection, detect
from midlevel_fast.features.grid import grid
from midlevel_fast.features.limits import check_image_size
from midlevel_fast.runtime.malloc import tune_malloc
from midlevel_fast.scoring.naive import patch_probabilities_naive
from midlevel_fast.scoring.points import window_points
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.runtime.precision import PRECISIONS, resolve_precision
from midlevel_fast.model.presence import presence_for

# The one list of scoring modes (the CLI and score_collection take their choices from it).
MODES: tuple[str, ...] = ("dense", "batched", "naive")
# Feature vectors per head call when turning features into probabilities: bounds the logits' memory only.
HEAD_BATCH = 1024


def _probabilities(model: PatchClassifier, feats: torch.Tensor) -> torch.Tensor:
    """``model``'s probabilities of ``feats``, :data:`HEAD_BATCH` rows at a time, on the CPU."""
    return torch.cat([model.probabilities(feats[i: i + HEAD_BATCH]).cpu() for i in range(0, len(feats), HEAD_BATCH)])


def checked_call(model: PatchClassifier | None, mode: str, k: float | None, device: str | torch.device | None,
                 precision: str) -> tuple[PatchClassifier, float, torch.device]:
    """The arguments that :func:`score_image` and :func:`midlevel_fast.scoring.images.score_images` share, checked
    (``ValueError`` naming the bad one) and resolved: ``(model, k, device)`` with the default model for ``None``,
    the model's ``k`` for ``None`` and the model's device for ``None``; the model is moved there, in eval mode."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    model = default_model() if model is None else model
    kk = float(model.info.k if k is None else k)
    if not kk > 0:
        raise ValueError(f"k must be > 0, got {k!r}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    return model.to(dev).eval(), kk, dev


def probabilities_result(model: PatchClassifier, probs: torch.Tensor, boxes: torch.Tensor, scale_index: torch.Tensor,
                         image_size: tuple[int, int], mode: str, k: float, device: torch.device,
                         detections: list[Detection], return_maps: bool | int = False) -> ScoreResult:
    """The :class:`ScoreResult` of one image from its patch probabilities ``probs (M, C)`` (CPU float32) and
    ``boxes (M, 4)`` (image pixels, ``(x0, y0, x1, y1)``): power-mean scores with exponent ``k``, presence,
    ``detections`` as given, and for ``return_maps`` (as in :func:`score_image`) the maps and points of the best
    classes, written on ``device`` when it is a GPU with Triton. ``seconds`` is left to the caller."""
    h, w = image_size
    scores = power_mean(probs, k)
    result = ScoreResult(model.class_names, scores, boxes, probs, scale_index, (h, w), mode, k,
                         presence=presence_for(scores, model.info.calibration, k), detections=detections)
    if return_maps is not False:
        n = len(model.class_names) if return_maps is True else int(return_maps)
        idx = torch.topk(scores, min(max(n, 1), len(model.class_names))).indices
        # On a GPU the fused Triton kernel writes the maps there; the result keeps CPU tensors either way.
        if device.type == "cuda" and backends()["triton"].available:
            result.maps = output_maps(boxes, probs[:, idx].to(device), h, w, backend="triton").cpu()
        else:
            result.maps = output_maps(boxes, probs[:, idx], h, w)
        result.map_classes = [model.class_names[i] for i in idx.tolist()]
        points = window_points(boxes, probs[:, idx].cpu(), h, w).tolist()
        result.points = {c: (x, y) for c, (x, y) in zip(result.map_classes, points)}
    return result


def features_result(model: PatchClassifier, feats: torch.Tensor, boxes: torch.Tensor, scale_index: torch.Tensor,
                    image_size: tuple[int, int], mode: str, k: float, device: torch.device, *,
                    return_maps: bool | int = False,
                    detection_threshold: float = DETECTION_THRESHOLD) -> ScoreResult:
    """The :class:`ScoreResult` of one image from its window or patch features ``feats (M, F)`` (float32, from
    ``model.regression_backbone()``: the mid-level vector first, then what the box regression reads) and their
    ``boxes (M, 4)``: the head's probabilities, the detections (:func:`midlevel_fast.scoring.detections.detect`
    at ``detection_threshold``), then :func:`probabilities_result`. Everything :func:`score_image` does after
    the features, shared with :func:`midlevel_fast.scoring.images.score_images`."""
    with torch.inference_mode():
        probs = _probabilities(model, feats[:, : model.backbone.feature_dim])
        detections = detect(boxes, probs, model.class_names, image_size, feats, model.info.box_regression,
                            threshold=detection_threshold)
    return probabilities_result(model, probs, boxes, scale_index, image_size, mode, k, device, detections,
                                return_maps)


def score_decoded(model: PatchClassifier, img: np.ndarray, source: Any, mode: str, k: float, device: torch.device, *,
                  return_maps: bool | int = False, batch_size: int | None = None, window_step: int | None = None,
                  precision: str = "auto", detection_threshold: float = DETECTION_THRESHOLD,
                  progress: bool | None = None) -> ScoreResult:
    """:func:`score_image` of ``img`` (RGB uint8 HWC, decoded from ``source``, which error messages name) once the
    arguments are checked (:func:`checked_call`); ``seconds`` is left to the caller."""
    h, w = img.shape[:2]
    scales, step = model.info.scales, model.info.grid_step
    # Too small an image is refused here, in every mode, before any work (too elongated a one for the dense mode
    # by dense_windows, before its first trunk pass).
    check_image_size(w, h, scales, model.backbone, source)
    if mode == "naive":
        g = grid(w, h, scales, step)
        with torch.inference_mode():
            probs = patch_probabilities_naive(model, img, g.boxes)
        # The per-patch loop keeps no features to regress boxes from: no detections.
        return probabilities_result(model, probs, g.boxes, g.scale_index, (h, w), mode, k, device, [], return_maps)
    run = resolve_precision(precision, mode, device)
    with torch.inference_mode():
        # With a regression on the windows' layout the features carry it after the mid-level vector.
        feats, boxes, scale_index = patch_features(model.regression_backbone(), img, mode, scales, step, window_step,
                                                   batch_size, run, progress)
    return features_result(model, feats, boxes, scale_index, (h, w), mode, k, device, return_maps=return_maps,
                           detection_threshold=detection_threshold)


def score_image(
    image: Any,
    model: PatchClassifier | None = None,
    *,
    mode: str = "dense",
    k: float | None = None,
    return_maps: bool | int = False,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    window_step: int | None = None,
    precision: str = "auto",
    detection_threshold: float = DETECTION_THRESHOLD,
    progress: bool | None = None,
) -> ScoreResult:
    """Scores ``image`` with ``model`` (default: :func:`midlevel_fast.model.classifier.default_model`).

    ``image``: a path, PIL image, numpy HWC or torch CHW array (see :func:`midlevel_fast.io.image_io.load_image`).
    ``mode``: ``"dense"`` (trunk once per scale, sliding window head), ``"batched"`` (fused crop_resize of the
    grid patches in chunks of ``batch_size``, batched forward) or ``"naive"`` (the per-patch PIL loop, one
    forward per patch). ``k``: the power-mean exponent (``None``: the model's, 5 as in the paper).
    ``return_maps``: ``True`` for the maps of every class, an int ``n`` for the ``n`` best classes only.
    ``window_step``: the dense window step in trunk cells (see :mod:`midlevel_fast.features.dense`).
    ``precision``: ``"fp32"``, ``"bf16"``, ``"int8"`` (EfficientNet-Lite0 on the CPU:
    :mod:`midlevel_fast.backbones.int8`) or ``"auto"`` (:func:`midlevel_fast.runtime.precision.resolve_precision`:
    bf16 for the dense and batched modes on CPUs with native bfloat16, else fp32); the naive loop is always fp32.
    ``detection_threshold``: the class probability a window needs to become a detection candidate
    (:func:`midlevel_fast.scoring.detections.detect`; the head's box regression, when it has one, moves it).
    ``progress``: a progress bar over the chunks of a long batched image (see :func:`patch_features`).
    Many images at once: :func:`midlevel_fast.scoring.images.score_images`.
    """
    t0 = time.perf_counter()
    tune_malloc()
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    model, kk, dev = checked_call(model, mode, k, device, precision)
    result = score_decoded(model, load_image(image), image, mode, kk, dev, return_maps=return_maps,
                           batch_size=batch_size, window_step=window_step, precision=precision,
                           detection_threshold=detection_threshold, progress=progress)
    result.seconds = time.perf_counter() - t0
    return result
