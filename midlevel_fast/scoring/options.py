"""How an image is scored: :class:`ScoreOptions`, the options that ``score_image``, ``score_images``,
``score_collection`` and the ``score``/``score-dir`` commands share, checked once where they are made.

The public functions keep their keyword arguments (``score_image(img, mode="batched")``) and build one of these;
their defaults are this class's, so there is one default per option.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import torch

from midlevel_fast.runtime.precision import PRECISIONS, Precision
from midlevel_fast.scoring.detections import DETECTION_THRESHOLD

Mode = Literal["dense", "batched", "naive"]
# The one list of scoring modes (the CLI and score_collection take their choices from it).
MODES: tuple[Mode, ...] = get_args(Mode)


@dataclass(frozen=True)
class ScoreOptions:
    """The scoring options, checked when made (``ValueError`` naming the option and what it takes).

    Attributes:
        mode: ``"dense"`` (the trunk once per scale, the head slid over its maps: :mod:`midlevel_fast.features.dense`),
            ``"batched"`` (the paper's grid patches cropped and resized by the fused ``crop_resize``, batched
            forward) or ``"naive"`` (the per-patch PIL loop, one forward per patch: the reference every fast path
            is checked against).
        k: the power-mean exponent of the image scores (``None``: the model's, 5 as in the paper).
        return_maps: ``True`` for the output maps of every class, an int ``n`` for the ``n`` best classes only,
            ``False`` (or 0) for none.
        window_step: the dense window step in trunk cells (``None``: the one closest to the paper's grid step,
            :func:`midlevel_fast.features.dense.default_window_step`).
        precision: ``"fp32"``, ``"bf16"``, ``"int8"`` (EfficientNet-Lite0 on the CPU:
            :mod:`midlevel_fast.backbones.int8`) or ``"auto"``
            (:func:`midlevel_fast.runtime.precision.resolve_precision`: bf16 for the dense and batched modes on
            CPUs with native bfloat16, else fp32); the naive loop is always fp32.
        detection_threshold: the class probability a window needs to become a detection candidate
            (:func:`midlevel_fast.scoring.detections.detect`), in ``[0, 1]``.
        device: where the model runs (``None``: the model's device; the default model is kept once per device).
        batch_size: patches per forward in the batched mode (``None``: all of a chunk bounded by memory).
        progress: a progress bar over the chunks of a long batched image (``None``: only for many patches on a
            terminal).
    """

    mode: Mode = "dense"
    k: float | None = None
    return_maps: bool | int = False
    window_step: int | None = None
    precision: Precision = "auto"
    detection_threshold: float = DETECTION_THRESHOLD
    device: str | torch.device | None = None
    batch_size: int | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.k is not None and not (_is_real(self.k) and 0 < self.k < math.inf):
            raise ValueError(f"k must be a finite number > 0 (or None for the model's), got {self.k!r}")
        if not isinstance(self.return_maps, (bool, Integral)) or self.return_maps < 0:
            raise ValueError(f"return_maps must be True, False or a number of classes >= 0, got {self.return_maps!r}")
        for name in ("window_step", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 (or None), got {value!r}")
        if not (_is_real(self.detection_threshold) and 0 <= self.detection_threshold <= 1):
            raise ValueError(f"detection_threshold must be a probability in [0, 1], got {self.detection_threshold!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(f"device must name a torch device ('cpu', 'cuda', 'cuda:1'), got {self.device!r}: "
                                 f"{e}") from e

    def as_kwargs(self) -> dict[str, Any]:
        """The options as the keyword arguments of ``score_image`` (shallow: the values themselves)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value)


DEFAULTS = ScoreOptions()
