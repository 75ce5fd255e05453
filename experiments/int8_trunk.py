"""The int8 trunk (``precision="int8"``, :mod:`midlevel_fast.backbones.int8`): its shipped activation ranges, and
its error and speed against float32 and bfloat16.

    python -m experiments.int8_trunk --write [--voc ROOT] [--calibration 16]
    python -m experiments.int8_trunk [--voc ROOT] [--images 20]

``--write`` calibrates the ranges on the dense planes (paper scales) of the first ``--calibration`` VOC train
images and writes them, with the SHA-256 of the ImageNet weights, to the package's
``midlevel_fast/data/int8_ranges_efficientnet_lite0.json``. Without it the script reports, on the first
``--images`` VOC val images: the relative L2 error of the window features of the int8 and the bf16 copies against
float32, how often the ImageNet top-1 class of the image (power mean of the windows' softmax) is the float32 one,
and each copy's median trunk time per image. VOC val mAP per precision: ``python -m experiments.precision_map
--precisions fp32 bf16 int8``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import midlevel_fast
from midlevel_fast.backbones import efficientnet_lite0
from midlevel_fast.backbones.int8 import calibrate_int8, weights_digest
from midlevel_fast.backbones.prepared import copy_dtype, prepared
from midlevel_fast.io.files import atomic_write_bytes
from midlevel_fast.io.image_io import load_image
from midlevel_fast.ops.aggregate import power_mean
from midlevel_fast.features.dense import default_window_step, dense_planes
from midlevel_fast.runtime.malloc import tune_malloc
from midlevel_fast.datasets.voc import load_split
from tests.helpers import experiment_voc_root

RANGES_FILE = Path(midlevel_fast.__file__).parent / "data" / "int8_ranges_efficientnet_lite0.json"


def write_ranges(root: Path, n_images: int) -> None:
    bb = efficientnet_lite0()
    images = load_split(root, "train")[:n_images]
    t0 = time.perf_counter()
    ranges = calibrate_int8(bb, (p for im in images for p in dense_planes(bb, load_image(im.path))))
    about = {"backbone": bb.name, "weights_sha256": weights_digest(bb),
             "calibration": f"min and max over the dense planes (paper scales) of the first {len(images)} VOC2012 "
                            "train images (experiments/int8_trunk.py --write)"}
    # One line per convolution, so that a new calibration reads as a diff of the ranges that moved.
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in about.items()]
    lines += [' "ranges": {', ",\n".join(f"  {json.dumps(name)}: {json.dumps(list(r))}" for name, r in ranges.items()),
              " }"]
    atomic_write_bytes(RANGES_FILE, ("{\n" + "\n".join(lines) + "\n}\n").encode())
    print(f"{len(ranges)} ranges from {len(images)} images in {time.perf_counter() - t0:.0f} s -> {RANGES_FILE}")


def median_time(fn, planes, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for p in planes:
            fn(p)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def compare(root: Path, n_images: int) -> None:
    bb = efficientnet_lite0()
    step = default_window_step(bb.window)
    nets = {name: prepared(bb, name) for name in ("fp32", "bf16", "int8")}
    errors: dict[str, list[float]] = {"int8": [], "bf16": []}
    same_top = {"int8": 0, "bf16": 0}
    seconds: dict[str, list[float]] = {name: [] for name in nets}
    with torch.inference_mode():
        for im in load_split(root, "val")[:n_images]:
            planes = dense_planes(bb, load_image(im.path))
            feats, top = {}, {}
            for name, net in nets.items():
                inputs = [p.to(copy_dtype(net)) for p in planes]
                feats[name] = torch.cat([net.window_head(net.trunk(x), step)[0].float().flatten(1).t()
                                         for x in inputs])
                top[name] = power_mean(torch.softmax(bb.imagenet_head(feats[name]), 1), 5.0).argmax().item()
                seconds[name].append(median_time(net.trunk, inputs))
            for name in errors:
                errors[name].append(((feats[name] - feats["fp32"]).norm() / feats["fp32"].norm()).item())
                same_top[name] += top[name] == top["fp32"]
    n = len(errors["int8"])
    print(f"CPU threads {torch.get_num_threads()}; {n} VOC val images")
    for name in nets:
        err = f"window-feature error {np.median(errors[name]):.3f}, same ImageNet top-1 {same_top[name]}/{n}" \
            if name in errors else "reference"
        print(f"  {name}: trunk {1e3 * np.median(seconds[name]):.0f} ms per image (median); {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--write", action="store_true", help="calibrate and write the shipped ranges")
    parser.add_argument("--calibration", type=int, default=16, help="VOC train images for the activation ranges")
    parser.add_argument("--images", type=int, default=20, help="VOC val images to compare on")
    args = parser.parse_args()
    tune_malloc()
    root = experiment_voc_root(args.voc)
    if args.write:
        write_ranges(root, args.calibration)
    else:
        compare(root, args.images)


if __name__ == "__main__":
    main()
