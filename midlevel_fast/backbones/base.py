"""The backbone contract shared by the dense scorer and the patch path.

Conventions:
    * Tensors are NCHW float32. Inputs to :meth:`Backbone.trunk` and :meth:`Backbone.forward` are already
      normalised: ``x_norm = (x / 255 - mean) / std`` with ``x`` RGB in 0..255 and ``mean``/``std`` in [0, 1]
      pixel units (per backbone).
    * A backbone is a frozen feature extractor: it is built in eval mode with ``requires_grad=False``.
    * Convolution weights are stored channels_last, which oneDNN runs 1.3-1.8x faster on CPU; the trunk accepts
      either layout and returns channels_last cells (same shape and values; call ``.contiguous()`` for NCHW
      strides).
    * Geometry: the trunk maps an ``H x W`` image to ``h x w`` cells of ``cell_size`` pixels. Window ``(u, v)`` of
      ``window_head(trunk(img), window_step)`` (row ``u``, column ``v``) is the feature of the input box
      ``y in [cell_size*window_step*u + off_y, ... + input_size)``,
      ``x in [cell_size*window_step*v + off_x, ... + input_size)`` with ``(off_y, off_x) = grid_offset(H, W)``;
      both offsets are 0 when ``H`` and ``W`` are multiples of ``cell_size``.
      "Feature of the box" means: the same cell grid as ``forward`` on that crop, but each cell sees the image
      around the box where the crop sees zero padding, so dense and crop vectors differ (much more for
      EfficientNet-Lite0, whose receptive field is 851 px, than for AlexNet).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# Where a training checkpoint keeps the weights; load_state_file takes the first of these it finds.
CHECKPOINT_KEYS = ("state_dict", "model")


def load_state_file(path: str, what: str, expected: str = "") -> Mapping[str, Tensor]:
    """The state dict in ``path`` (``torch.load`` with ``weights_only``), or the one a checkpoint keeps under a
    key of :data:`CHECKPOINT_KEYS`; ``FileNotFoundError`` when missing, ``ValueError`` when unreadable (a whole
    pickled module included) or not a mapping. ``what`` names the weights in the messages, ``expected``
    (optional) the file the user should give."""
    if not os.path.isfile(path):
        hint = f"; expected {expected}" if expected else ""
        raise FileNotFoundError(f"{what} weights not found at {path!r}{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses arbitrary pickles; torch's message runs to a page about safe globals.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read {what} weights from {path!r}: it holds pickled Python objects (a whole "
                         f"nn.Module or a training checkpoint?), not only tensors ({first[:200]}); save "
                         "model.state_dict() with torch.save and pass that file") from None
    except Exception as exc:
        raise ValueError(f"cannot read {what} weights from {path!r}: {exc}") from exc
    if isinstance(state, Mapping):
        # Training checkpoints keep the weights under one of these keys, next to optimiser state and epochs.
        wrapped = [k for k in CHECKPOINT_KEYS if isinstance(state.get(k), Mapping)]
        if wrapped and not any(isinstance(v, Tensor) for v in state.values()):
            state = state[wrapped[0]]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, expected a state dict "
                         "(save model.state_dict() with torch.save)")
    return state


def check_state_dict(wanted: Mapping[str, torch.Size], state: Mapping[str, Tensor], what: str) -> None:
    """Raises ``ValueError`` naming the first missing, unexpected or wrongly shaped entries of ``state`` against
    the ``wanted`` shapes; ``what`` names the expected kind of file in the message."""
    problems = [f"missing {k}" for k in sorted(wanted.keys() - state.keys())]
    problems += [f"unexpected {k}" for k in sorted(state.keys() - wanted.keys())]
    problems += [
        f"{k}: shape {tuple(state[k].shape)}, expected {tuple(shape)}"
        for k, shape in wanted.items()
        if k in state and state[k].shape != shape
    ]
    if problems:
        raise ValueError(f"not {what} ({len(problems)} problems): " + "; ".join(problems[:5]))


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names (WordNet lemmas) in the standard class-index order."""
    text = (resources.files("midlevel_fast") / "data" / "imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(text.splitlines())
    if len(names) != 1000:
        raise RuntimeError(f"midlevel_fast/data/imagenet_classes.txt has {len(names)} lines, expected 1000")
    return names


class Backbone(nn.Module):
    """A frozen ImageNet CNN split into a fully convolutional trunk and a sliding-window head.

    Attributes:
        name: registry name, e.g. ``"efficientnet_lite0"``.
        input_size: patch side in pixels (224).
        cell_size: input pixels per trunk cell (the trunk's output stride).
        window: ``K``, the number of trunk cells (per side) covering one ``input_size`` patch.
        feature_dim: size of the mid-level vector.
        cell_dim: channels of one trunk cell (``D``).
        batch_size: patches per forward pass that run fastest on a CPU (measured: small batches keep
            EfficientNet-Lite0's depthwise activations in cache; AlexNet's FC layers want large ones).
        mean, std: input normalisation, in [0, 1] pixel units.
        imagenet_classes: the 1000 ImageNet class names that ``imagenet_head`` scores.
        imagenet_head: ``nn.Linear(feature_dim, 1000)``, the ImageNet classifier on top of the mid-level vector.
            It takes ``(B, feature_dim)``; for dense maps use :meth:`imagenet_head_dense`.
        top_modules: names of the submodules of the network's last block, the part ``--unfreeze top`` trains
            (:meth:`below_top`, :meth:`top`); empty when the backbone cannot unfreeze it.
        top_input_shape: ``(channels, h, w)`` of one patch's input to the top.
        fused: compute each convolution with its activation in one oneDNN call
            (:func:`midlevel_fast.backbones.fused.conv2d`); set only on the frozen inference copies that
            :func:`midlevel_fast.backbones.prepared.prepared` makes.
    """

    name: str
    input_size: int = 224
    cell_size: int
    window: int
    feature_dim: int
    cell_dim: int
    batch_size: int = 32
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    if TYPE_CHECKING:
        # Read-only to consumers: a backbone provides it as a property over one of its layers (AlexNet's FC8) or
        # as a submodule of that name (test backbones), so the type checker sees a property either can satisfy.
        @property
        def imagenet_head(self) -> nn.Linear: ...
    top_modules: tuple[str, ...] = ()
    top_input_shape: tuple[int, int, int] = (0, 0, 0)
    fused: bool = False

    @property
    def imagenet_classes(self) -> list[str]:
        """The 1000 ImageNet class names, in the order of ``imagenet_head``'s outputs."""
        return list(imagenet_classes())

    def grid_offset(self, height: int, width: int) -> tuple[int, int]:
        """``(off_y, off_x)``: input-pixel position of window ``(0, 0)``'s top-left corner on an ``H x W`` input."""
        return 0, 0

    def trunk(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, D, h, w)`` cells. Fully convolutional."""
        raise NotImplementedError

    def window_head(self, cells: Tensor, window_step: int = 1) -> Tensor:
        """``(B, D, h, w)`` cells -> ``(B, feature_dim, h', w')``, one vector per ``K x K`` window of cells taken
        every ``window_step`` cells, ``h' = (h - K) // window_step + 1``."""
        raise NotImplementedError

    def window_layout(self, cells: Tensor, window_step: int = 1) -> Tensor:
        """``(B, D, h, w)`` cells -> ``(B, 4·D, h', w')``: per ``K x K`` window (taken as :meth:`window_head` takes
        them), the means of its four quadrants of ``ceil(K/2) x ceil(K/2)`` cells (top-left, top-right,
        bottom-left, bottom-right; for odd ``K`` they share the middle row and column). Where in the window the
        object lies, which the mid-level vector, a whole-window mean or projection, keeps little of."""
        side = (self.window + 1) // 2
        means = F.avg_pool2d(cells, side, stride=1)
        rows = (cells.shape[2] - self.window) // window_step + 1
        cols = (cells.shape[3] - self.window) // window_step + 1
        far = self.window - side
        return torch.cat([means[:, :, a::window_step, b::window_step][:, :, :rows, :cols]
                          for a in (0, far) for b in (0, far)], dim=1)

    def forward(self, patches: Tensor) -> Tensor:
        """``(B, 3, input_size, input_size)`` normalised patches -> ``(B, feature_dim)`` mid-level vectors."""
        if patches.dim() != 4 or patches.shape[1] != 3 or patches.shape[-2:] != (self.input_size,) * 2:
            raise ValueError(
                f"{self.name} expects patches of shape (B, 3, {self.input_size}, {self.input_size}), "
                f"got {tuple(patches.shape)}; use trunk + window_head for whole images"
            )
        return self.window_head(self.trunk(patches)).flatten(1)

    def below_top(self, patches: Tensor) -> Tensor:
        """``(B, 3, input_size, input_size)`` normalised patches -> ``(B, *top_input_shape)``: the frozen part."""
        raise NotImplementedError(f"{self.name} has no trainable top (--unfreeze top)")

    def top(self, x: Tensor) -> Tensor:
        """``(B, *top_input_shape)`` -> ``(B, feature_dim)`` mid-level vectors: ``top(below_top(p)) == forward(p)``
        in eval mode."""
        raise NotImplementedError(f"{self.name} has no trainable top (--unfreeze top)")

    def imagenet_head_dense(self, features: Tensor) -> Tensor:
        """``(B, feature_dim, h, w)`` dense mid-level features -> ``(B, 1000, h, w)`` ImageNet logits."""
        return self.imagenet_head(features.movedim(1, -1)).movedim(-1, 1)

    def _finalize(self) -> None:
        self.eval()
        self.requires_grad_(False)
        # torch's stubs lack Module.to(memory_format=), which torch accepts
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
