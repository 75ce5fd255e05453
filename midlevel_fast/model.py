"""Adaptation head (FCa, FCb), the patch classifier built on a backbone, and their safetensors files.

Convention: a head maps mid-level vectors ``(B, F)`` (or dense maps ``(B, F, h, w)``, as 1×1 convolutions with
the same weights) to logits over its outputs. When ``background`` is set the last output is the background
class: it takes part in the softmax but is never reported.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midlevel_fast.scoring.grid import PAPER_SCALES, PAPER_STRIDE

HEAD_FORMAT = "midlevel_fast.head/1"
DEFAULT_HEAD = "voc_head_lite0.safetensors"


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
        self.in_dim, self.num_outputs, self.layers, self.hidden, self.dropout = in_dim, num_outputs, layers, hidden, dropout
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
    """What a head file says about how to use its head."""

    backbone: str
    class_names: list[str]
    background: bool = True
    k: float = 5.0
    scales: list[float] = field(default_factory=lambda: list(PAPER_SCALES))
    grid_stride: float = PAPER_STRIDE
    layers: int = 2
    hidden: int = 2048
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) + int(self.background)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same directory and a rename, so a reader
    never sees a half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        # mkstemp creates 0600; the result should have the permissions any new file gets.
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_head(path: str | os.PathLike, head: AdaptationHead, info: HeadInfo, dtype: torch.dtype = torch.float32) -> None:
    """Saves ``head``'s weights (as ``dtype``) and ``info`` as a safetensors file, atomically."""
    from safetensors.torch import save

    if head.num_outputs != info.num_outputs or head.layers != info.layers:
        raise ValueError("head shape does not match its info (outputs, layers)")
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in head.state_dict().items()}
    meta = {
        "format": HEAD_FORMAT, "backbone": info.backbone, "class_names": json.dumps(info.class_names),
        "background": json.dumps(info.background), "k": json.dumps(info.k), "scales": json.dumps(info.scales),
        "grid_stride": json.dumps(info.grid_stride), "layers": json.dumps(info.layers),
        "hidden": json.dumps(info.hidden), "dropout": json.dumps(head.dropout), "in_dim": json.dumps(head.in_dim),
        "extra": json.dumps(info.extra),
    }
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_head(path: str | os.PathLike) -> tuple[AdaptationHead, HeadInfo]:
    """Loads a head file written by :func:`save_head` (weights come back as float32, in eval mode).

    Raises ``FileNotFoundError`` when missing and ``ValueError`` when the file is not a readable head file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"head file {str(p)!r} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"head file {str(p)!r} is not a readable safetensors file ({e})") from None
    if meta.get("format") != HEAD_FORMAT:
        raise ValueError(f"head file {str(p)!r} has format {meta.get('format')!r}, expected {HEAD_FORMAT!r}")
    try:
        info = HeadInfo(
            backbone=meta["backbone"], class_names=json.loads(meta["class_names"]),
            background=json.loads(meta["background"]), k=json.loads(meta["k"]), scales=json.loads(meta["scales"]),
            grid_stride=json.loads(meta["grid_stride"]), layers=json.loads(meta["layers"]),
            hidden=json.loads(meta["hidden"]), extra=json.loads(meta.get("extra", "{}")),
        )
        head = AdaptationHead(json.loads(meta["in_dim"]), info.num_outputs, info.layers, info.hidden,
                              json.loads(meta["dropout"]))
        head.load_state_dict({k: v.float() for k, v in tensors.items()})
    except (KeyError, json.JSONDecodeError, RuntimeError, TypeError) as e:
        raise ValueError(f"head file {str(p)!r} has missing or inconsistent entries ({e})") from None
    return head.eval(), info


class PatchClassifier(nn.Module):
    """A frozen backbone plus a head: mid-level vectors -> class probabilities.

    ``head`` maps ``(B, feature_dim)`` to logits over ``info.num_outputs``; :meth:`probabilities` applies the
    softmax and drops the background column.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, info: HeadInfo):
        super().__init__()
        if info.backbone != backbone.name:
            raise ValueError(f"head was trained on backbone {info.backbone!r}, not {backbone.name!r}")
        self.backbone, self.head, self.info = backbone, head, info

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` mid-level vectors -> ``(B, C)`` probabilities of the reported classes: a softmax
        over all outputs, or per-output sigmoids for heads trained with the multi-label objective."""
        logits = self.head(features).float()
        if self.info.extra.get("objective") == "multilabel":
            probs = torch.sigmoid(logits)
        else:
            probs = torch.softmax(logits, dim=1)
        return probs[:, : len(self.info.class_names)]


def source_classifier(backbone: nn.Module) -> PatchClassifier:
    """The backbone's own ImageNet classifier (FC8 / ``_fc``) as a patch classifier over 1000 classes."""
    info = HeadInfo(backbone=backbone.name, class_names=list(backbone.source_classes), background=False,
                    layers=1, hidden=0)
    return PatchClassifier(backbone, backbone.source_head, info)


def shipped_head_path() -> Path | None:
    """Path of the VOC head shipped in the package, if this build has one."""
    p = Path(str(resources.files("midlevel_fast") / "data" / DEFAULT_HEAD))
    return p if p.is_file() else None


def load_model(head: str | os.PathLike | None = None, backbone: str | None = None, **backbone_kw: Any) -> PatchClassifier:
    """A patch classifier: ``head`` is a head file, ``"imagenet"`` for the backbone's source classifier, or
    ``None`` for the default (the shipped VOC head on EfficientNet-Lite0, or Lite0's ImageNet classifier when
    this build ships no head). ``backbone`` defaults to the head file's backbone, else ``efficientnet_lite0``."""
    from midlevel_fast.backbones import get_backbone

    if head is None:
        head = shipped_head_path() or "imagenet"
    if str(head) == "imagenet":
        return source_classifier(get_backbone(backbone or "efficientnet_lite0", **backbone_kw))
    adaptation, info = load_head(head)
    return PatchClassifier(get_backbone(backbone or info.backbone, **backbone_kw), adaptation, info).eval()


@cache
def default_model() -> PatchClassifier:
    """The default model, built once per process."""
    return load_model().eval()

