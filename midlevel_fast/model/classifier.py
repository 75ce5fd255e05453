"""The patch classifier (a frozen backbone plus a head) and how models are found: head files, the backbone's
own ImageNet classifier, and the head shipped in the package."""
from __future__ import annotations

import difflib
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midlevel_fast.backbones import Backbone, get_backbone
from midlevel_fast.backbones.layout import BackboneLike, WindowLayout
from midlevel_fast.backbones.top import load_top
from midlevel_fast.model.head import HeadInfo, class_probabilities, load_head

DEFAULT_HEAD = "voc_head_lite0.safetensors"


class PatchClassifier(nn.Module):
    """A frozen backbone plus a head: mid-level vectors -> class probabilities.

    ``head`` maps ``(B, feature_dim)`` to logits over ``info.num_outputs``; :meth:`probabilities` applies the
    softmax and drops the background column.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, info: HeadInfo) -> None:
        super().__init__()
        if info.backbone != backbone.name:
            raise ValueError(f"head was trained on backbone {info.backbone!r}, not {backbone.name!r}")
        self.backbone, self.head, self.info = backbone, head, info
        reg = info.box_regression
        if reg is not None and reg.feature_dim != self.regression_backbone().feature_dim:
            raise ValueError(f"the head's box regression reads {reg.feature_dim} {reg.features} features; "
                             f"{backbone.name} gives {self.regression_backbone().feature_dim}")

    def regression_backbone(self) -> BackboneLike:
        """The backbone whose window features the box regression reads: the backbone itself, or for a regression on
        the windows' layout :class:`midlevel_fast.backbones.layout.WindowLayout` of it (whose features begin with
        the mid-level vector, so the head reads their first ``feature_dim``)."""
        reg = self.info.box_regression
        return WindowLayout(self.backbone) if reg is not None and reg.features == "layout" else self.backbone

    @property
    def class_names(self) -> list[str]:
        """The reported classes (background excluded), in the order of :meth:`probabilities`' columns."""
        return self.info.class_names

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` mid-level vectors -> ``(B, C)`` probabilities of the reported classes: a softmax
        over all outputs, or per-output sigmoids for heads trained with the multi-label objective."""
        return class_probabilities(self.head(features), self.info.extra.get("objective", "softmax"),
                                   len(self.info.class_names))


def imagenet_classifier(backbone: Backbone) -> PatchClassifier:
    """The backbone's own ImageNet classifier (FC8 / ``_fc``) as a patch classifier over 1000 classes."""
    info = HeadInfo(backbone=backbone.name, class_names=list(backbone.imagenet_classes), background=False,
                    layers=1, hidden=0)
    return PatchClassifier(backbone, backbone.imagenet_head, info)


def shipped_head_path() -> Path | None:
    """Path of the VOC head shipped in the package, if this build has one."""
    p = Path(str(resources.files("midlevel_fast") / "data" / DEFAULT_HEAD))
    return p if p.is_file() else None


def load_model(head: str | os.PathLike | None = None, backbone: str | None = None,
               **backbone_kw: Any) -> PatchClassifier:
    """A patch classifier in eval mode: ``head`` is a head file, ``"imagenet"`` for the backbone's ImageNet
    classifier, or ``None`` for the default (the shipped VOC head on EfficientNet-Lite0, or Lite0's ImageNet
    classifier when this build ships no head). A head file with a fine-tuned top (``--unfreeze top``) replaces the
    backbone's top weights with its own. ``backbone`` defaults to the head file's backbone, else
    ``efficientnet_lite0``; ``backbone_kw`` go to its factory (e.g. ``weights_path``). Raises as
    :func:`midlevel_fast.model.head.load_head` does, and ``ValueError`` when the head and backbone do not match."""
    if head is None:
        head = shipped_head_path() or "imagenet"
    if str(head) == "imagenet":
        return imagenet_classifier(get_backbone(backbone or "efficientnet_lite0", **backbone_kw))
    if not Path(head).is_file():
        hint = " (did you mean 'imagenet'?)" if difflib.get_close_matches(str(head), ["imagenet"], cutoff=0.7) else ""
        raise FileNotFoundError(f"head {str(head)!r} is not a file{hint}: give a head file (.safetensors), 'imagenet' "
                                "for the backbone's ImageNet classifier, or no head for the default model")
    adaptation, info = load_head(head)
    trunk = get_backbone(backbone or info.backbone, **backbone_kw)
    if info.top is not None:
        # A head trained with --unfreeze top carries its own weights for the backbone's last block.
        load_top(trunk, info.top, f"head file {str(head)!r}")
    return PatchClassifier(trunk, adaptation, info).eval()


def default_model(device: str | torch.device = "cpu") -> PatchClassifier:
    """The default model (:func:`load_model` without arguments) on ``device``, built once per process and device
    and shared: callers must not modify or move it (a call that wants another device gets that device's copy)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _default_model(str(device))


@cache
def _default_model(device: str) -> PatchClassifier:
    return load_model().to(device).eval()

