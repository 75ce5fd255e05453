"""A backbone whose windows carry their layout: each window's feature is its mid-level vector followed by the
means of its four quadrants of trunk cells (:meth:`midlevel_fast.backbones.base.Backbone.window_layout`).

The box regression reads these (``BoxRegression.description["features"] == "layout"``): the mid-level vector,
a whole-window mean on Lite0, keeps the object's size but not where in the window it is, and a regression on it
barely moves the windows (VOC val detection mAP 13.4; 21.1 from the layout, ``experiments/detection.py``).
Wrapping rather than changing the backbone lets every consumer of ``window_head`` (dense windows, batched crops,
feature caches) compute them unchanged, under another name (``<name>+layout``) so that their caches never mix.
"""
from __future__ import annotations

from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from midlevel_fast.backbones.base import Backbone

LAYOUT_SUFFIX = "+layout"


class WindowLayout(nn.Module):
    """``backbone`` with ``window_head`` returning ``(B, feature_dim + 4·cell_dim, h', w')``: the mid-level vector
    (its first ``backbone.feature_dim`` channels), then the four quadrant means. Everything else is the wrapped
    backbone's."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.inner = backbone
        self.name = backbone.name + LAYOUT_SUFFIX
        self.feature_dim = backbone.feature_dim + 4 * backbone.cell_dim

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules (self.inner)
        except AttributeError:
            return getattr(self.inner, name)

    def trunk(self, x: Tensor) -> Tensor:
        return self.inner.trunk(x)

    def window_head(self, cells: Tensor, window_step: int = 1) -> Tensor:
        return torch.cat([self.inner.window_head(cells, window_step), self.inner.window_layout(cells, window_step)],
                         dim=1)

    def forward(self, patches: Tensor) -> Tensor:
        """``(B, 3, input_size, input_size)`` normalised patches -> ``(B, feature_dim)``."""
        return self.window_head(self.inner.trunk(patches)).flatten(1)


# What the scoring and training paths take: a backbone, or one wrapped so that its windows carry their layout.
BackboneLike: TypeAlias = Backbone | WindowLayout
