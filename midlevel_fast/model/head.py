"""The adaptation head (FCa, FCb) and its safetensors files.

Convention: a head maps mid-level vectors ``(B, F)`` (or dense maps ``(B, F, h, w)``, as 1×1 convolutions with
the same weights) to logits over its outputs. When ``background`` is set the last output is the background
class: it takes part in the softmax but is never reported. Heads trained with the ``"multilabel"`` objective
give per-output sigmoids instead (:func:`class_probabilities`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
import torch.nn.functional as F
from torch import nn

from midlevel_fast.backbones.top import TOP_PREFIX
from midlevel_fast.io.files import atomic_write_bytes
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP
from midlevel_fast.model.box_regression import BoxRegression
from midlevel_fast.model.detector import RoiDetector
from midlevel_fast.model.presence import Calibration

HEAD_FORMAT = "midlevel_fast.head/1"
OBJECTIVES: tuple[str, ...] = ("softmax", "multilabel")
# The calibration's tensors sit beside the weights under this prefix (float64 and bool, whatever the weights' dtype).
CALIBRATION_PREFIX = "calibration."
CALIBRATION_TENSORS: tuple[str, ...] = ("parameters", "scores", "positives", "ignore")
# The box regression's weight (C, 4, F) and bias (C, 4), stored in the weights' dtype: in float16 it keeps the
# shipped head under 6.5 MB and VOC val detection mAP at 21.1, the same as float32.
BOX_REGRESSION_PREFIX = "box_regression."
DETECTOR_PREFIX = "detector."


class AdaptationHead(nn.Module):
    """``layers - 1`` blocks of FCa (``hidden`` units, ReLU, dropout) followed by FCb (``num_outputs``).

    ``layers = 1`` is a linear classifier on the mid-level vector; the paper uses 2 (FCa 2048 + FCb).
    """

    def __init__(self, in_dim: int, num_outputs: int, layers: int = 2, hidden: int = 2048, dropout: float = 0.5):
        super().__init__()
        if not 1 <= layers <= 3:
            raise ValueError(f"layers must be 1, 2 or 3, got {layers}")
        if in_dim < 1 or num_outputs < 1 or hidden < 1 or not 0 <= dropout < 1:
            raise ValueError("in_dim, num_outputs and hidden must be >= 1 and dropout in [0, 1)")
        self.in_dim, self.num_outputs, self.layers = in_dim, num_outputs, layers
        self.hidden, self.dropout = hidden, dropout
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``(B, num_outputs)`` logits, or ``(B, F, h, w)`` -> ``(B, num_outputs, h, w)``."""
        if x.ndim == 4:
            return self.net(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.net(x)


@dataclass
class HeadInfo:
    """What a head file says about how to use its head.

    Attributes:
        backbone: registry name of the backbone the head was trained on.
        class_names: the reported classes, in output order.
        background: whether one more output, the last, is the background class.
        k: the power-mean exponent of the image score.
        scales, grid_step: the patch grid (:func:`midlevel_fast.features.grid.grid`) the head was trained on.
        layers, hidden: the head's shape (:class:`AdaptationHead`).
        extra: anything else, e.g. ``"objective"`` (one of :data:`OBJECTIVES`) and the training settings.
        calibration: the presence calibration and its fit data
            (:class:`midlevel_fast.model.presence.Calibration`), or ``None`` for a head without one.
        box_regression: the per-class box regression of detections
            (:class:`midlevel_fast.model.box_regression.BoxRegression`), or ``None`` for a head without one.
        detector: the ROI detector (:class:`midlevel_fast.model.detector.RoiDetector`) whose detections
            :func:`~midlevel_fast.scoring.score.score_image` returns in the dense mode, or ``None``: the detections
            are then the head's windows (moved by ``box_regression`` when there is one).
        top: the fine-tuned weights of the backbone's top (``--unfreeze top``,
            :mod:`midlevel_fast.backbones.top`) by state-dict name, or ``None`` when the trunk stayed frozen.
    """

    backbone: str
    class_names: list[str]
    background: bool = True
    k: float = 5.0
    scales: list[float] = field(default_factory=lambda: list(PAPER_SCALES))
    grid_step: float = PAPER_STEP
    layers: int = 2
    hidden: int = 2048
    extra: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None
    box_regression: BoxRegression | None = None
    detector: RoiDetector | None = None
    top: dict[str, torch.Tensor] | None = None

    def require_frozen(self, what: str) -> None:
        """``ValueError`` when the head fine-tuned the backbone's top: ``what`` (e.g. evaluating from the feature
        cache, which holds the frozen backbone's features) would silently use the wrong features."""
        if self.top is not None:
            raise ValueError(f"this head fine-tuned the top of {self.backbone} (--unfreeze top): {what} reads the "
                             "frozen backbone's cached features; score images with it instead (score_image, "
                             "score_boxes)")

    @property
    def num_outputs(self) -> int:
        """Outputs of the head: one per class, plus the background when it has one."""
        return len(self.class_names) + int(self.background)


def save_head(path: str | os.PathLike, head: AdaptationHead, info: HeadInfo,
              dtype: torch.dtype = torch.float32) -> None:
    """Saves ``head``'s weights (as ``dtype``) and ``info`` as a safetensors file, atomically (an existing file is
    replaced only once the new one is complete). Raises ``ValueError`` when ``head`` does not match ``info``."""
    if head.num_outputs != info.num_outputs or head.layers != info.layers:
        raise ValueError("head shape does not match its info (outputs, layers)")
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in head.state_dict().items()}
    meta = {
        "format": HEAD_FORMAT, "backbone": info.backbone, "class_names": json.dumps(info.class_names),
        "background": json.dumps(info.background), "k": json.dumps(info.k), "scales": json.dumps(info.scales),
        "grid_step": json.dumps(info.grid_step), "layers": json.dumps(info.layers),
        "hidden": json.dumps(info.hidden), "dropout": json.dumps(head.dropout), "in_dim": json.dumps(head.in_dim),
        "extra": json.dumps(info.extra),
    }
    if info.calibration is not None:
        cal = info.calibration
        if cal.num_classes != len(info.class_names):
            raise ValueError(f"calibration has {cal.num_classes} classes, the head {len(info.class_names)}")
        meta["calibration"] = json.dumps({"method": cal.method, "k": cal.k, "description": cal.description})
        tensors.update({CALIBRATION_PREFIX + name: getattr(cal, name).contiguous()
                        for name in CALIBRATION_TENSORS})
    if info.box_regression is not None:
        reg = info.box_regression
        if reg.num_classes != len(info.class_names) or not _regression_fits(reg, head.in_dim):
            raise ValueError(f"box regression is for {reg.num_classes} classes of {reg.feature_dim} {reg.features} "
                             f"features, the head has {len(info.class_names)} classes of {head.in_dim}")
        meta["box_regression"] = json.dumps(reg.description)
        tensors[BOX_REGRESSION_PREFIX + "weight"] = reg.weight.to(dtype).contiguous()
        tensors[BOX_REGRESSION_PREFIX + "bias"] = reg.bias.to(dtype).contiguous()
    if info.detector is not None:
        det = info.detector
        if det.num_classes != len(info.class_names):
            raise ValueError(f"the detector has {det.num_classes} classes, the head {len(info.class_names)}")
        meta["detector"] = json.dumps(det.metadata())
        tensors.update({DETECTOR_PREFIX + name: t.to(dtype).contiguous() for name, t in det.tensors().items()})
    if info.top is not None:
        tensors.update({TOP_PREFIX + name: value.detach().to("cpu", dtype).contiguous()
                        for name, value in info.top.items()})
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_head(path: str | os.PathLike) -> tuple[AdaptationHead, HeadInfo]:
    """Loads a head file written by :func:`save_head` (weights come back as float32, in eval mode).

    Raises ``FileNotFoundError`` when missing and ``ValueError`` when the file is not a readable head file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"head file {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"head file {str(p)!r} is not a readable safetensors file ({e})") from None
    if meta.get("format") != HEAD_FORMAT:
        raise ValueError(f"head file {str(p)!r} has format {meta.get('format')!r}, expected {HEAD_FORMAT!r}")
    try:
        info = HeadInfo(
            backbone=meta["backbone"], class_names=json.loads(meta["class_names"]),
            background=json.loads(meta["background"]), k=json.loads(meta["k"]), scales=json.loads(meta["scales"]),
            # Files written before the rename (0.1) call the grid step "grid_stride".
            grid_step=json.loads(meta["grid_step"] if "grid_step" in meta else meta["grid_stride"]),
            layers=json.loads(meta["layers"]),
            hidden=json.loads(meta["hidden"]), extra=json.loads(meta.get("extra", "{}")),
            # Files written before presence calibration have none.
            calibration=_calibration(meta, tensors) if "calibration" in meta else None,
            box_regression=(BoxRegression(tensors[BOX_REGRESSION_PREFIX + "weight"],
                                          tensors[BOX_REGRESSION_PREFIX + "bias"], json.loads(meta["box_regression"]))
                            if "box_regression" in meta else None),
            # Files written before the ROI detector have none.
            detector=(RoiDetector.from_stored(json.loads(meta["detector"]),
                                              {name[len(DETECTOR_PREFIX):]: value for name, value in tensors.items()
                                               if name.startswith(DETECTOR_PREFIX)})
                      if "detector" in meta else None),
            top={name[len(TOP_PREFIX):]: value.float() for name, value in tensors.items()
                 if name.startswith(TOP_PREFIX)} or None,
        )
        _check_info_types(info)
        head = AdaptationHead(json.loads(meta["in_dim"]), info.num_outputs, info.layers, info.hidden,
                              json.loads(meta["dropout"]))
        head.load_state_dict({k: v.float() for k, v in tensors.items()
                              if not k.startswith((CALIBRATION_PREFIX, BOX_REGRESSION_PREFIX, DETECTOR_PREFIX,
                                                                TOP_PREFIX))})
        if info.box_regression is not None and (info.box_regression.num_classes != len(info.class_names)
                                                or not _regression_fits(info.box_regression, head.in_dim)):
            raise ValueError("the box regression does not match the head's classes and features")
        if info.detector is not None and info.detector.num_classes != len(info.class_names):
            raise ValueError(f"the detector has {info.detector.num_classes} classes, the head "
                             f"{len(info.class_names)}")
    except (KeyError, json.JSONDecodeError, RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"head file {str(p)!r} has missing or inconsistent entries ({e})") from None
    return head.eval(), info


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_info_types(info: HeadInfo) -> None:
    """``ValueError`` naming the entry when a head file's metadata parses as JSON of the wrong kind (e.g. numbers as
    class names, a NaN ``k``, an empty grid): such a head would load and then score garbage."""
    if not (isinstance(info.class_names, list) and info.class_names
            and all(isinstance(c, str) and c for c in info.class_names)):
        raise ValueError(f"class_names must be a non-empty list of names, got {info.class_names!r}")
    if not isinstance(info.background, bool):
        raise ValueError(f"background must be true or false, got {info.background!r}")
    if not (_is_number(info.k) and info.k > 0):
        raise ValueError(f"k must be a positive number, got {info.k!r}")
    if not (isinstance(info.scales, list) and info.scales and all(_is_number(s) and s > 0 for s in info.scales)):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {info.scales!r}")
    if not (_is_number(info.grid_step) and info.grid_step > 0):
        raise ValueError(f"grid_step must be a positive number, got {info.grid_step!r}")
    if not isinstance(info.extra, dict):
        raise ValueError(f"extra must be a JSON object, got {info.extra!r}")


def _regression_fits(reg: BoxRegression, in_dim: int) -> bool:
    # Layout features are the mid-level vector plus the cells' quadrant means, whose size only the backbone knows
    # (PatchClassifier checks it exactly).
    # ROI features are the detector's (RoiDetector), never the windows'.
    if reg.features == "roi":
        return False
    return reg.feature_dim == in_dim if reg.features == "mid-level" else reg.feature_dim > in_dim


def stored_dtype(path: str | os.PathLike) -> torch.dtype:
    """The dtype the weights of the head file ``path`` are stored in (:func:`load_head` returns float32), so that a
    head rewritten with new extras keeps its size."""
    with safe_open(str(path), framework="pt") as f:
        return next(f.get_tensor(name).dtype for name in f.keys() if name.startswith("net."))


def _calibration(meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> Calibration:
    entry = json.loads(meta["calibration"])
    t = {name: tensors[CALIBRATION_PREFIX + name] for name in CALIBRATION_TENSORS}
    return Calibration(entry["method"], t["parameters"], entry["k"], t["scores"], t["positives"], t["ignore"],
                       entry["description"])


def class_probabilities(logits: torch.Tensor, objective: str, num_classes: int, log: bool = False) -> torch.Tensor:
    """``(B, num_outputs)`` logits -> ``(B, num_classes)`` float32 probabilities of the reported classes: a softmax
    over all outputs (``"softmax"``, background included) or per-output sigmoids (``"multilabel"``). ``log``: their
    logarithms, computed without underflow (for losses on probabilities far below float32's smallest)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    logits = logits.float()
    if objective == "softmax":
        probs = torch.log_softmax(logits, dim=1) if log else torch.softmax(logits, dim=1)
    else:
        probs = F.logsigmoid(logits) if log else torch.sigmoid(logits)
    return probs[:, :num_classes]
