"""Frozen ImageNet backbones split into a fully convolutional trunk and a sliding-window head.

See :class:`Backbone` for the shared contract (layouts, normalisation, window geometry).
"""

from __future__ import annotations

from collections.abc import Callable

from midlevel_fast.backbones.alexnet import AlexNet, alexnet
from midlevel_fast.backbones.base import Backbone, imagenet_classes
from midlevel_fast.backbones.efficientnet_lite import EfficientNetLite0, efficientnet_lite0

__all__ = [
    "AlexNet",
    "Backbone",
    "EfficientNetLite0",
    "alexnet",
    "efficientnet_lite0",
    "get_backbone",
    "resolve_backbone",
    "imagenet_classes",
]

_REGISTRY: dict[str, Callable[..., Backbone]] = {"alexnet": alexnet, "efficientnet_lite0": efficientnet_lite0}


def get_backbone(name: str, **kwargs: object) -> Backbone:
    """Build the backbone registered as ``name`` (``"efficientnet_lite0"`` or ``"alexnet"``) with ``kwargs``."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**kwargs)


def resolve_backbone(backbone: str | Backbone) -> Backbone:
    """``backbone`` itself when it is built already (e.g. with a weights file), else :func:`get_backbone` of the
    name with its default weights."""
    return backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
