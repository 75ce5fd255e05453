"""Post-training static int8 quantisation of Lite0's dense trunk through oneDNN, against the bf16 prepared copy.

    python -m experiments.int8_trunk [--voc ROOT] [--calibration 16] [--images 20]

This is the measurement behind the README's "int8" paragraph, kept so that a session on another CPU (AMX-INT8)
can rerun it; int8 is not a ``precision`` of the library, because on the CPU it was measured on it was slower than
bf16 and twice as far from float32 (README). The scheme is the one the x86 Inductor quantizer lowers to, written
with the same oneDNN ops (``torch.ops.onednn.qconv_prepack`` / ``qconv2d_pointwise``):

* weights: int8, symmetric, one scale per output channel;
* activations: uint8, one scale per tensor. Every ReLU6 output lies in [0, 6], so the inputs of the depthwise,
  project and head convolutions get the fixed scale 6/255 with zero point 0, and the image (``(x - 127)/128``)
  is exactly ``x`` with scale 1/128 and zero point 127. Only the blocks' linear outputs (the expand convolutions'
  and the residuals' inputs) need ranges: their min and max over the dense planes of ``--calibration`` VOC train
  images;
* residual sums inside the convolution (oneDNN's ``sum`` post-op), ReLU6 fused, the head's output dequantised to
  float32.

It reports, on the first ``--images`` VOC val images: the relative L2 error of the window features of int8 and
of bf16 against float32, how often the ImageNet top-1 class of the image (power mean of the windows) is the
float32 one, and the trunk's median time per image in each precision.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from midlevel_fast.backbones import efficientnet_lite0
from midlevel_fast.backbones.efficientnet_lite import _same_padding
from midlevel_fast.backbones.prepared import prepared
from midlevel_fast.io.image_io import load_image
from midlevel_fast.ops.aggregate import power_mean
from midlevel_fast.scoring.dense import default_window_step, dense_planes
from midlevel_fast.scoring.malloc import tune_malloc
from midlevel_fast.training.voc import load_split
from tests.helpers import experiment_voc_root

RELU6_SCALE = 6 / 255


def block_ranges(bb, planes: list[torch.Tensor]) -> list[tuple[float, float]]:
    """(min, max) of each block's output over ``planes`` (float32 module)."""
    ranges = [(0.0, 0.0)] * len(bb._blocks)

    def hook(i):
        def record(module, inputs, out):
            lo, hi = ranges[i]
            ranges[i] = (min(lo, out.min().item()), max(hi, out.max().item()))
        return record

    handles = [blk.register_forward_hook(hook(i)) for i, blk in enumerate(bb._blocks)]
    with torch.inference_mode():
        for p in planes:
            bb.trunk(p)
    for h in handles:
        h.remove()
    return ranges


class Int8Trunk:
    """Lite0's trunk with int8 weights and uint8 activations (module docstring)."""

    def __init__(self, bb, ranges: list[tuple[float, float]]):
        self.bb = bb
        self.out_q = [((hi - lo) / 255, int(round(-lo / ((hi - lo) / 255)))) for lo, hi in ranges]
        self.packs = {"stem": self._pack(bb._conv_stem, 1 / 128, 127)}
        for i, blk in enumerate(bb._blocks):
            if blk._expand_conv is not None:
                self.packs[i, "expand"] = self._pack(blk._expand_conv, *self.out_q[i - 1])
            self.packs[i, "dw"] = self._pack(blk._depthwise_conv, RELU6_SCALE, 0)
            self.packs[i, "project"] = self._pack(blk._project_conv, RELU6_SCALE, 0)
        self.packs["head"] = self._pack(bb._conv_head, *self.out_q[-1])

    @staticmethod
    def _pack(conv, x_scale: float, x_zp: int):
        w = conv.weight.detach().float()
        scales = w.abs().amax(dim=(1, 2, 3)).clamp(min=1e-8) / 127
        qw = torch.round(w / scales.view(-1, 1, 1, 1)).clamp(-128, 127).to(torch.int8)
        qw = qw.contiguous(memory_format=torch.channels_last)
        packed = torch.ops.onednn.qconv_prepack(qw, scales, x_scale, x_zp, list(conv.stride), [conv.padding[0]] * 2,
                                                [1, 1], conv.groups, None)
        return packed, scales, torch.zeros(len(scales), dtype=torch.int64), conv.bias.detach().float()

    def _conv(self, key, conv, x, x_q, out_q, relu6, out_dtype=None, accum=None, accum_q=(0.0, 0)):
        packed, w_scale, w_zp, bias = self.packs[key]
        if conv.stride[0] != 1:
            (top, bottom), (left, right) = (_same_padding(n, conv.kernel_size[0], conv.stride[0]) for n in x.shape[-2:])
            x = F.pad(x, (left, right, top, bottom), value=x_q[1])  # the zero point is the quantised zero
        geometry = (list(conv.stride), [conv.padding[0]] * 2, [1, 1], conv.groups)
        if accum is not None:
            return torch.ops.onednn.qconv2d_pointwise.binary(x, *x_q, packed, w_scale, w_zp, accum, bias, *geometry,
                                                             *out_q, out_dtype, *accum_q, "sum", 1.0, None, [], None)
        act, scalars = ("hardtanh", [0.0, 6.0]) if relu6 else ("none", [])
        return torch.ops.onednn.qconv2d_pointwise(x, *x_q, packed, w_scale, w_zp, bias, *geometry, *out_q, out_dtype,
                                                  act, scalars, "")

    def __call__(self, image_u8: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H, W)`` uint8 channels_last RGB -> float32 cells."""
        relu6_q = (RELU6_SCALE, 0)
        x, x_q = self._conv("stem", self.bb._conv_stem, image_u8, (1 / 128, 127), relu6_q, True), relu6_q
        for i, blk in enumerate(self.bb._blocks):
            y = x
            if blk._expand_conv is not None:
                y = self._conv((i, "expand"), blk._expand_conv, y, x_q, relu6_q, True)
            y = self._conv((i, "dw"), blk._depthwise_conv, y, relu6_q, relu6_q, True)
            # oneDNN sums the residual into its accumulator in place: a copy, as x is the previous output.
            residual = dict(accum=x.clone(), accum_q=x_q) if blk.residual else {}
            x = self._conv((i, "project"), blk._project_conv, y, relu6_q, self.out_q[i], False, **residual)
            x_q = self.out_q[i]
        return self._conv("head", self.bb._conv_head, x, x_q, (1.0, 0), True, out_dtype=torch.float32)


def median_time(fn, planes, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for p in planes:
            fn(p)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--calibration", type=int, default=16, help="VOC train images for the activation ranges")
    parser.add_argument("--images", type=int, default=20, help="VOC val images to compare on")
    args = parser.parse_args()
    tune_malloc()
    root = experiment_voc_root(args.voc)
    bb = efficientnet_lite0()
    step = default_window_step(bb.window)
    calib = [p for im in load_split(root, "train")[: args.calibration] for p in dense_planes(bb, load_image(im.path))]
    int8 = Int8Trunk(bb, block_ranges(bb, calib))
    bf16 = prepared(bb, "bf16")
    errors = {"int8": [], "bf16": []}
    same_top = {"int8": 0, "bf16": 0}
    seconds = {"fp32": [], "bf16": [], "int8": []}
    with torch.inference_mode():
        for im in load_split(root, "val")[: args.images]:
            planes = dense_planes(bb, load_image(im.path))
            as_u8 = [(p * 128 + 127).round().clamp(0, 255).to(torch.uint8) for p in planes]
            as_bf16 = [p.bfloat16() for p in planes]
            runs = {"fp32": lambda i: bb.trunk(planes[i]), "bf16": lambda i: bf16.trunk(as_bf16[i]).float(),
                    "int8": lambda i: int8(as_u8[i])}
            feats = {name: torch.cat([bb.window_head(run(i), step)[0].flatten(1).t() for i in range(len(planes))])
                     for name, run in runs.items()}
            top = {name: power_mean(torch.softmax(bb.imagenet_head(f), 1), 5.0).argmax().item()
                   for name, f in feats.items()}
            for name in ("int8", "bf16"):
                errors[name].append(((feats[name] - feats["fp32"]).norm() / feats["fp32"].norm()).item())
                same_top[name] += top[name] == top["fp32"]
            for name, run in runs.items():
                seconds[name].append(median_time(run, range(len(planes))))
    n = len(errors["int8"])
    print(f"CPU threads {torch.get_num_threads()}; {n} VOC val images, ranges from {args.calibration} train images")
    for name in ("fp32", "bf16", "int8"):
        err = f"window-feature error {np.median(errors[name]):.3f}, same ImageNet top-1 {same_top[name]}/{n}" \
            if name in errors else "reference"
        print(f"  {name}: trunk {1e3 * np.median(seconds[name]):.0f} ms per image (median); {err}")


if __name__ == "__main__":
    main()
