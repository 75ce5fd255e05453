"""Fine-tuning the top of the trunk with the adaptation layers (the paper's "U" rows, e.g. PRE-1512U: FC6 retrained
with FCa/FCb): the backbone's last block (:attr:`midlevel_fast.backbones.base.Backbone.top_modules`) learns, at a
smaller learning rate, everything below it stays frozen and is cached once (:meth:`Backbone.below_top`).

The trained top travels in the head file (:mod:`midlevel_fast.backbones.top`) and is put into the backbone a
model is built with, so every scoring mode uses it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from midlevel_fast.backbones.base import Backbone

UNFREEZE: tuple[str, ...] = ("none", "top")


class TopAndHead(nn.Module):
    """A trainable copy of ``backbone``'s top followed by ``head``: flattened top inputs ``(B, prod(top_input_shape))``
    -> logits. Only the top's parameters and the head's require gradients; ``backbone`` itself is not touched."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        if not backbone.top_modules:
            raise ValueError(f"backbone {backbone.name} has no trainable top: train it with --unfreeze none")
        self.backbone = copy.deepcopy(backbone).requires_grad_(False)
        for name in backbone.top_modules:
            self.backbone.get_submodule(name).requires_grad_(True)
        self.head = head

    def top_parameters(self) -> list[nn.Parameter]:
        """The parameters of the top (not the head's)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = x.view(len(x), *self.backbone.top_input_shape).contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone.top(cells))
