"""crop_resize on the 512 grid patches of a 500×375 image: the naive loops, the fused kernel, and the floor.

Run: ``pytest benchmarks/bench_crop_resize.py --benchmark-only``. The floor is a copy of the same output bytes
(``out.copy_``, threads as torch uses them); the baseline is the per-patch PIL loop.
"""
from __future__ import annotations

import pytest
import torch

from midlevel_fast import crop_resize, grid
from midlevel_fast.scoring.naive import crop_resize_pil

from .baselines import crop_resize_interpolate_loop

GROUP = "crop_resize 512 patches 224x224"


@pytest.fixture(scope="module")
def setup(voc_image):
    name, img = voc_image
    boxes = grid(img.shape[1], img.shape[0]).boxes
    return name, img, boxes


def test_pil_loop(benchmark, setup):
    name, img, boxes = setup
    benchmark.group = GROUP
    benchmark.extra_info.update(baseline=True, image=name, patches=len(boxes))
    benchmark.pedantic(crop_resize_pil, args=(img, boxes), rounds=3, warmup_rounds=1)


def test_interpolate_loop(benchmark, setup):
    _, img, boxes = setup
    benchmark.group = GROUP
    timg = torch.from_numpy(img)
    benchmark.pedantic(crop_resize_interpolate_loop, args=(timg, boxes), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_fused_cpu(benchmark, setup, out_dtype):
    _, img, boxes = setup
    benchmark.group = GROUP
    out = torch.empty((len(boxes), 3, 224, 224), dtype=out_dtype)
    benchmark.extra_info.update(threads=torch.get_num_threads(), MB=round(out.nbytes / 2**20))
    benchmark.pedantic(crop_resize, args=(img, boxes), kwargs=dict(out=out, out_dtype=out_dtype), rounds=15,
                       warmup_rounds=2)


def test_fused_cpu_allocating(benchmark, setup):
    _, img, boxes = setup
    benchmark.group = GROUP
    benchmark.pedantic(crop_resize, args=(img, boxes), rounds=10, warmup_rounds=2)


def test_memcpy_floor(benchmark, setup):
    _, _, boxes = setup
    benchmark.group = GROUP
    src = torch.randn(len(boxes), 3, 224, 224)
    dst = torch.empty_like(src)
    benchmark.extra_info.update(MB=round(dst.nbytes / 2**20))
    benchmark.pedantic(dst.copy_, args=(src,), rounds=15, warmup_rounds=2)
