"""``score_image``: per-class image scores and output maps from multi-scale patches (naive, batched, dense).

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the (EXIF-oriented) image.
Probabilities come from a softmax over the head's outputs (background included when the head has one) and
only the reported classes are returned. ``score(C) = 1/M Σ_i y(C|P_i)^k``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from midlevel_fast.io.image_io import load_image
from midlevel_fast.model.classifier import PatchClassifier, default_model
from midlevel_fast.ops.aggregate import output_maps, power_mean
from midlevel_fast.ops.backends import backends
from midlevel_fast.features.patch_features import patch_features
from midlevel_fast.scoring.detections import Detection, detect
from midlevel_fast.scoring.roi_detections import roi_detections
from midlevel_fast.features.roi import PyramidMaps, image_maps, pyramid_windows
from midlevel_fast.features.grid import grid
from midlevel_fast.features.limits import check_image_size
from midlevel_fast.runtime.malloc import tune_malloc
from midlevel_fast.scoring.naive import patch_probabilities_naive
from midlevel_fast.scoring.points import window_points
from midlevel_fast.scoring.options import DEFAULTS, Mode, ScoreOptions
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.runtime.precision import Precision, resolve_precision
from midlevel_fast.model.presence import presence_for

# Feature vectors per head call when turning features into probabilities: bounds the logits' memory only.
HEAD_BATCH = 1024


def _probabilities(model: PatchClassifier, feats: torch.Tensor) -> torch.Tensor:
    """``model``'s probabilities of ``feats``, :data:`HEAD_BATCH` rows at a time, on the CPU."""
    return torch.cat([model.probabilities(feats[i: i + HEAD_BATCH]).cpu() for i in range(0, len(feats), HEAD_BATCH)])


def checked_call(model: PatchClassifier | None, options: ScoreOptions) -> tuple[PatchClassifier, float, torch.device]:
    """What :func:`score_image` and :func:`midlevel_fast.scoring.images.score_images` resolve before any work:
    ``(model, k, device)``. ``None`` is the default model on ``options.device`` (the CPU for ``None``), one copy
    per device that no call moves (:func:`midlevel_fast.model.classifier.default_model`); a given model is moved to
    ``options.device`` (``None``: it stays where it is) and set to eval mode. ``k`` is the model's for ``None``."""
    if model is None:
        device = torch.device("cpu" if options.device is None else options.device)
        model = default_model(device)
    else:
        device = torch.device(options.device) if options.device is not None else next(model.parameters()).device
        model = model.to(device).eval()
    k = float(model.info.k if options.k is None else options.k)
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k!r} (the model's k)")
    return model, k, device


def probabilities_result(model: PatchClassifier, probs: torch.Tensor, boxes: torch.Tensor, scale_index: torch.Tensor,
                         image_size: tuple[int, int], options: ScoreOptions, k: float, device: torch.device,
                         detections: list[Detection], seconds: float = 0.0) -> ScoreResult:
    """The :class:`ScoreResult` of one image from its patch probabilities ``probs (M, C)`` (CPU float32) and
    ``boxes (M, 4)`` (image pixels, ``(x0, y0, x1, y1)``): power-mean scores with exponent ``k``, presence,
    ``detections`` as given, and for ``options.return_maps`` the maps and points of the best classes, written on
    ``device`` when it is a GPU with Triton."""
    h, w = image_size
    scores = power_mean(probs, k)
    maps, map_classes, points = _maps_and_points(probs, boxes, scores, model.class_names, h, w, options.return_maps,
                                                 device)
    return ScoreResult(model.class_names, scores, boxes, probs, scale_index, (h, w), options.mode, k, maps=maps,
                       map_classes=map_classes, points=points, seconds=seconds,
                       presence=presence_for(scores, model.info.calibration, k), detections=detections)


def _maps_and_points(probs: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, class_names: list[str], h: int,
                     w: int, return_maps: bool | int,
                     device: torch.device) -> tuple[torch.Tensor | None, list[str], dict[str, tuple[float, float]]]:
    """``(maps, map_classes, points)`` of :class:`ScoreResult` for ``return_maps``: nothing for ``False``, else the
    best ``return_maps`` classes (every class for ``True``, at least one)."""
    if return_maps is False:
        return None, [], {}
    n = len(class_names) if return_maps is True else int(return_maps)
    idx = torch.topk(scores, min(max(n, 1), len(class_names))).indices
    # On a GPU the fused Triton kernel writes the maps there; the result keeps CPU tensors either way.
    if device.type == "cuda" and backends()["triton"].available:
        maps = output_maps(boxes, probs[:, idx].to(device), h, w, backend="triton").cpu()
    else:
        maps = output_maps(boxes, probs[:, idx], h, w)
    map_classes = [class_names[i] for i in idx.tolist()]
    xy = window_points(boxes, probs[:, idx].cpu(), h, w).tolist()
    return maps, map_classes, {c: (x, y) for c, (x, y) in zip(map_classes, xy)}


def features_result(model: PatchClassifier, feats: torch.Tensor, boxes: torch.Tensor, scale_index: torch.Tensor,
                    image_size: tuple[int, int], options: ScoreOptions, k: float, device: torch.device,
                    seconds: float = 0.0, pyramid: PyramidMaps | None = None) -> ScoreResult:
    """The :class:`ScoreResult` of one image from its window or patch features ``feats (M, F)`` (float32, from
    ``model.regression_backbone()``: the mid-level vector first, then what the box regression reads) and their
    ``boxes (M, 4)``: the head's probabilities, the detections at ``options.detection_threshold``, then
    :func:`probabilities_result`. The detections are the ROI detector's
    (:func:`midlevel_fast.scoring.roi_detections.roi_detections`) when the head has one and ``pyramid``, the
    image's trunk maps, is given; else the windows' (:func:`midlevel_fast.scoring.detections.detect`).
    Everything :func:`score_image` does after the features, shared with
    :func:`midlevel_fast.scoring.images.score_images`."""
    with torch.inference_mode():
        probs = _probabilities(model, feats[:, : model.backbone.feature_dim])
        if pyramid is not None and model.info.detector is not None:
            detections = roi_detections(pyramid, model.info.detector, model.class_names,
                                        threshold=options.detection_threshold)
        else:
            detections = detect(boxes, probs, model.class_names, image_size, feats, model.info.box_regression,
                                threshold=options.detection_threshold)
    return probabilities_result(model, probs, boxes, scale_index, image_size, options, k, device, detections,
                                seconds)


def score_decoded(model: PatchClassifier, img: np.ndarray, source: Any, options: ScoreOptions, k: float,
                  device: torch.device, started: float) -> ScoreResult:
    """:func:`score_image` of ``img`` (RGB uint8 HWC, decoded from ``source``, which error messages name) once
    :func:`checked_call` has resolved ``model``, ``k`` and ``device``; ``seconds`` counts from ``started``
    (``time.perf_counter()``)."""
    h, w = img.shape[:2]
    scales, step = model.info.scales, model.info.grid_step
    # Too small an image is refused here, in every mode, before any work (too elongated a one for the dense mode
    # by dense_windows, before its first trunk pass).
    check_image_size(w, h, scales, model.backbone, source)
    if options.mode == "naive":
        g = grid(w, h, scales, step)
        with torch.inference_mode():
            probs = patch_probabilities_naive(model, img, g.boxes)
        # The per-patch loop keeps no features to regress boxes from: no detections.
        return probabilities_result(model, probs, g.boxes, g.scale_index, (h, w), options, k, device, [],
                                    time.perf_counter() - started)
    run = resolve_precision(options.precision, options.mode, device)
    if options.mode == "dense" and model.info.detector is not None:
        # The windows and the detector's box features share one trunk pass per scale.
        with torch.inference_mode():
            pyramid = image_maps(model.backbone, img, scales, step, options.window_step, run)
            windows = pyramid_windows(pyramid)
        return replace(features_result(model, *windows, (h, w), options, k, device, pyramid=pyramid),
                       seconds=time.perf_counter() - started)
    with torch.inference_mode():
        # With a regression on the windows' layout the features carry it after the mid-level vector.
        feats, boxes, scale_index = patch_features(model.regression_backbone(), img, options.mode, scales, step,
                                                   options.window_step, options.batch_size, run, options.progress)
    # seconds counts the detections and maps too, not only the features.
    return replace(features_result(model, feats, boxes, scale_index, (h, w), options, k, device),
                   seconds=time.perf_counter() - started)


def score_image(
    image: Any,
    model: PatchClassifier | None = None,
    *,
    mode: Mode = DEFAULTS.mode,
    k: float | None = DEFAULTS.k,
    return_maps: bool | int = DEFAULTS.return_maps,
    batch_size: int | None = DEFAULTS.batch_size,
    device: str | torch.device | None = DEFAULTS.device,
    window_step: int | None = DEFAULTS.window_step,
    precision: Precision = DEFAULTS.precision,
    detection_threshold: float = DEFAULTS.detection_threshold,
    progress: bool | None = DEFAULTS.progress,
) -> ScoreResult:
    """Scores ``image`` with ``model`` (``None``: the default model, the shipped VOC head on EfficientNet-Lite0:
    :func:`midlevel_fast.model.classifier.default_model`).

    ``image``: a path, PIL image, numpy HWC or torch CHW array (see :func:`midlevel_fast.io.image_io.load_image`).
    The keyword arguments are the fields of :class:`midlevel_fast.scoring.options.ScoreOptions`, where each is
    described and checked (``ValueError`` naming the bad one). Returns the complete
    :class:`~midlevel_fast.scoring.result.ScoreResult`. Many images at once:
    :func:`midlevel_fast.scoring.images.score_images`.
    """
    started = time.perf_counter()
    options = ScoreOptions(mode=mode, k=k, return_maps=return_maps, batch_size=batch_size, device=device,
                           window_step=window_step, precision=precision, detection_threshold=detection_threshold,
                           progress=progress)
    tune_malloc()
    model, kk, dev = checked_call(model, options)
    return score_decoded(model, load_image(image), image, options, kk, dev, started)
