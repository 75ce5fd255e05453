"""AlexNet (Krizhevsky et al. 2012, torchvision's single-tower "one weird trick" variant) as a :class:`Backbone`.

The module mirrors torchvision's layout and state-dict names (``features.0.weight`` ... ``classifier.6.bias``),
so torchvision's ``alexnet-owt-7be5be79.pth`` loads unchanged. AlexNet weights are not shipped with this
package: pass ``weights_path``.

Conventions:
    * Input: NCHW float32, RGB, ``(x / 255 - mean) / std`` with torchvision's ImageNet mean and std.
    * Trunk = ``features`` (C1-C5 + pool5): ``cell_size = 32``, a 224 patch gives ``6 x 6`` cells and a
      ``224 + 32 m`` side gives ``6 + m``.
    * Window head = FC6 as a ``6 x 6`` convolution (its Linear weight viewed as ``(4096, 256, 6, 6)``, the
      C, H, W order in which torchvision flattens pool5) and FC7 as a ``1 x 1`` convolution, each followed by
      ReLU; the mid-level vector is FC7 after ReLU. ``imagenet_head`` is FC8.
    * Geometry: ``window = 6``; the grid starts at 0 on every input size, since all padding is fixed and
      symmetric (rows and columns beyond the last full pooling window are ignored).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from midlevel_fast.backbones.base import Backbone, check_state_dict, load_state_file
from midlevel_fast.backbones.fused import conv2d, conv_padding
from midlevel_fast.ops.crop_resize import IMAGENET_MEAN, IMAGENET_STD

_FC = 4096


class AlexNet(Backbone):
    """torchvision-layout AlexNet with a dense (convolutional) FC6/FC7 window head; dropout is never applied."""

    name = "alexnet"
    cell_size = 32
    window = 6
    feature_dim = _FC
    cell_dim = 256
    batch_size = 64
    # The paper's "U" row retrains FC6 (FC7 stays frozen); its input is the pool5 window.
    top_modules = ("classifier.1",)
    top_input_shape = (256, 6, 6)
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        # Kept as torchvision's Sequential so the state-dict indices (1, 4, 6) match; only its Linear layers are
        # used, through window_head and imagenet_head.
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(256 * 6 * 6, _FC),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(_FC, _FC),
            nn.ReLU(inplace=True),
            nn.Linear(_FC, 1000),
        )

    @property
    def imagenet_head(self) -> nn.Linear:
        return self._linear(6)

    def _linear(self, index: int) -> nn.Linear:
        """Layer ``index`` of ``classifier``, one of its Linear layers (1, 4, 6: FC6, FC7, FC8)."""
        layer = self.classifier[index]
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"classifier[{index}] is a {type(layer).__name__}, expected nn.Linear")
        return layer

    def trunk(self, x: Tensor) -> Tensor:
        return self._features(x)

    def _features(self, x: Tensor) -> Tensor:
        # Every Conv2d of ``features`` is followed by its ReLU, which conv2d applies with it (fused once prepared).
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                x = conv2d(x, layer.weight, layer.bias, stride=layer.stride[0], padding=conv_padding(layer), act="relu",
                           fused=self.fused)
            elif isinstance(layer, nn.MaxPool2d):
                x = layer(x)
        return x

    def window_head(self, cells: Tensor, window_step: int = 1) -> Tensor:
        fc6, fc7 = self._linear(1), self._linear(4)
        if self.fused and fc6.weight.dtype == torch.bfloat16:
            return self._window_gemms(cells, window_step)
        # The FC weights are plain NCHW views; oneDNN runs these huge-kernel convs faster on NCHW cells. In float32
        # torch's own convolution beats both the GEMMs of _window_gemms and the fused call inside a dense call
        # (1393, 1587 and 1465 ms per 500x375 image), so prepared float32 copies keep it too.
        cells = cells.contiguous()
        x = conv2d(cells, fc6.weight.view(_FC, 256, self.window, self.window), fc6.bias, stride=window_step,
                   act="relu")
        # Dropout on FC6 only while it is trained (--unfreeze top, the paper's "U" row); frozen backbones are in
        # eval mode and never apply it.
        x = F.dropout(x, 0.5, self.training)
        return conv2d(x, fc7.weight.view(_FC, _FC, 1, 1), fc7.bias, act="relu")

    def _window_gemms(self, cells: Tensor, window_step: int) -> Tensor:
        """The window head of a prepared (frozen, inference) bfloat16 copy: FC6 and FC7 as two GEMMs over the
        windows' unfolded cells. On the dense planes' small maps (6x8 to 26x36 cells) oneDNN ran FC6 as a 6x6
        convolution at a quarter of its GEMM rate; im2col costs 1 % of the GEMMs. ``unfold`` orders each
        window's values channel, row, column: torchvision's flattening of pool5, so the Linear weights apply as
        they are. Returns the same ``(B, 4096, h', w')`` as the convolutions (a channels_last view)."""
        fc6, fc7 = self._linear(1), self._linear(4)
        b, _, h, w = cells.shape
        rows, cols = (h - self.window) // window_step + 1, (w - self.window) // window_step + 1
        windows = F.unfold(cells.contiguous(), self.window, stride=window_step).transpose(1, 2)
        x = F.linear(windows.reshape(b * rows * cols, -1), fc6.weight, fc6.bias).relu_()
        x = F.linear(x, fc7.weight, fc7.bias).relu_()
        return x.view(b, rows, cols, _FC).permute(0, 3, 1, 2)

    def below_top(self, patches: Tensor) -> Tensor:
        return self._features(patches)

    def top(self, x: Tensor) -> Tensor:
        return self.window_head(x).flatten(1)


def _random_init(model: AlexNet) -> None:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
            if module.bias is not None:  # every layer here has one
                nn.init.zeros_(module.bias)


def alexnet(*, pretrained: bool = True, weights_path: str | os.PathLike[str] | None = None) -> AlexNet:
    """Build a frozen AlexNet backbone in eval mode (float32, CPU).

    Args:
        pretrained: ``False`` gives seeded random (Kaiming-normal) weights, for speed and shape work only
            (emits a ``UserWarning``).
        weights_path: torchvision's ImageNet AlexNet state dict (``alexnet-owt-7be5be79.pth``), required when
            ``pretrained`` is true.

    Raises:
        ValueError: ``pretrained`` without ``weights_path`` (the weights are not shipped), ``weights_path`` with
            ``pretrained=False``, or a file that is unreadable or not an AlexNet state dict.
        FileNotFoundError: ``weights_path`` does not exist.
    """
    model = AlexNet()
    if not pretrained:
        if weights_path is not None:
            raise ValueError("weights_path was given with pretrained=False; drop one of them")
        warnings.warn(
            "alexnet(pretrained=False) has random weights: use it for speed and shape work only",
            UserWarning,
            stacklevel=2,
        )
        _random_init(model)
    else:
        if weights_path is None:
            raise ValueError(
                "AlexNet ImageNet weights are not shipped with midlevel_fast: pass "
                "weights_path='.../alexnet-owt-7be5be79.pth' (torchvision's file), or pretrained=False for "
                "random weights"
            )
        state = load_state_file(os.fspath(weights_path), "AlexNet", "torchvision's alexnet-owt-7be5be79.pth")
        check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state, "a torchvision AlexNet state dict")
        model.load_state_dict(state)
    model._finalize()
    return model
