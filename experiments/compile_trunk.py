"""``torch.compile`` (Inductor, weights frozen) of the dense trunk, against the eager prepared copy.

    python -m experiments.compile_trunk [--backbone lite0|alexnet] [--precision bf16|fp32] [--images 1] [--rounds 5]

The measurement behind the "torch.compile" line of docs/precision.md, kept so that it can be rerun on
another CPU.
For each of two compile strategies, on the nine dense planes of the first ``--images`` VOC val images (the
planes ``score_image`` feeds the trunk):

* ``dynamic``: one compile with symbolic plane sizes (``dynamic=True``) for every plane;
* ``static``: one compile per plane size (``dynamic=False``), nine per image size;

it reports the compile time (the first pass over the planes), the median steady time of the trunk + window head
per image, and the relative L2 error of the window features against the eager prepared copy
(:func:`midlevel_fast.backbones.prepared.prepared`, fused oneDNN convolutions), timed in the same run.
The compiled module is the unfused one cast to the same dtype: Inductor sees plain ``aten`` convolutions and
does its own fusion and weight prepacking (``torch._inductor.config.freezing``).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch

from midlevel_fast.backbones import alexnet, efficientnet_lite0
from midlevel_fast.backbones.prepared import DTYPES, prepared
from midlevel_fast.io.image_io import load_image
from midlevel_fast.features.dense import default_window_step, dense_planes
from midlevel_fast.runtime.malloc import tune_malloc
from midlevel_fast.datasets.voc import load_split
from tests.helpers import experiment_voc_root


def run_planes(fn, planes: list[torch.Tensor]) -> list[torch.Tensor]:
    return [fn(p) for p in planes]


def median_seconds(fn, planes_per_image: list[list[torch.Tensor]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        for planes in planes_per_image:
            t0 = time.perf_counter()
            run_planes(fn, planes)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voc", default=None, help="VOC2012 root (default: ../shared/data/VOCdevkit/VOC2012)")
    ap.add_argument("--backbone", choices=["lite0", "alexnet"], default="lite0")
    ap.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tune_malloc()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bb = efficientnet_lite0() if args.backbone == "lite0" else alexnet(pretrained=False)
    root = experiment_voc_root(args.voc)
    ids = load_split(root, "val")[: args.images]
    dtype = DTYPES[args.precision]
    images = [[p.to(dtype) for p in dense_planes(bb, load_image(im.path))] for im in ids]
    step = default_window_step(bb.window)
    eager = prepared(bb, args.precision)
    plain = copy.deepcopy(bb).to(dtype).eval().requires_grad_(False)

    def head(net):
        return lambda x: net.window_head(net.trunk(x), step)

    print(f"{args.backbone} {args.precision}, {len(ids)} VOC val images x {len(images[0])} planes, "
          f"{torch.get_num_threads()} threads")
    torch._inductor.config.freezing = True
    # one compile per plane size, no eager fallback
    torch._dynamo.config.recompile_limit = 2 * len(images[0]) * len(images)
    with torch.inference_mode():
        want = [run_planes(head(eager), planes) for planes in images]
        t_eager = median_seconds(head(eager), images, args.rounds)
        print(f"  eager prepared: {t_eager * 1e3:.0f} ms per image (median)")
        for name, dynamic in [("dynamic", True), ("static", False)]:
            torch._dynamo.reset()
            fn = torch.compile(head(plain), dynamic=dynamic)
            t0 = time.perf_counter()
            try:
                got = [run_planes(fn, planes) for planes in images]
            except torch._dynamo.exc.BackendCompilerFailed as e:  # a finding, not the end of the experiment
                lines = str(e).strip().splitlines()
                print(f"  compiled {name}: failed after {time.perf_counter() - t0:.0f} s: "
                      f"{next((line for line in lines if 'Error' in line), lines[0])}")
                continue
            compile_s = time.perf_counter() - t0
            err = max(float((g.float() - w.float()).norm() / w.float().norm())
                      for gs, ws in zip(got, want) for g, w in zip(gs, ws))
            t = median_seconds(fn, images, args.rounds)
            print(f"  compiled {name}: compile {compile_s:.0f} s, {t * 1e3:.0f} ms per image (median, "
                  f"{t_eager / t:.2f}x eager), max feature error vs eager {err:.3g}")


if __name__ == "__main__":
    main()
