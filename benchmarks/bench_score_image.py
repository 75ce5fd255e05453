"""score_image on one 500×375 VOC image: naive per-patch loop vs batched vs dense, for EfficientNet-Lite0
(ImageNet weights) and AlexNet-shaped random weights; plus the AlexNet conv phase against sgemm.

Run: ``pytest benchmarks/bench_score_image.py --benchmark-only`` (about 3 minutes on 2 cores: the naive loops
take ~20 s and ~55 s per round).
"""
from __future__ import annotations

import time
import warnings

import pytest
import torch

from midlevel_fast import load_model, score_image
from midlevel_fast.backbones import alexnet
from midlevel_fast.model import imagenet_classifier
from midlevel_fast.ops.crop_resize import crop_resize
from midlevel_fast.scoring.dense import default_window_step, dense_length
from midlevel_fast.scoring.grid import PAPER_SCALES

from .peak_memory import PeakRSS

ROUNDS = {"naive": 1, "batched": 3, "dense": 5}
# "dense" is the default (precision="auto": bf16 trunk on CPUs with native bf16); "dense fp32" forces float32.
VARIANTS = {"naive": ("naive", "auto"), "batched": ("batched", "auto"), "dense fp32": ("dense", "fp32"),
            "dense": ("dense", "auto")}


@pytest.fixture(scope="module")
def models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        alex = imagenet_classifier(alexnet(pretrained=False))
    return {"lite0": load_model("imagenet"), "alexnet": alex}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("backbone", ["lite0", "alexnet"])
def test_score_image(benchmark, models, voc_image, backbone, variant):
    name, img = voc_image
    model = models[backbone]
    mode, precision = VARIANTS[variant]
    benchmark.group = f"score_image {backbone} 500x375"
    with PeakRSS() as mem:
        res = benchmark.pedantic(score_image, args=(img, model), kwargs=dict(mode=mode, precision=precision),
                                 rounds=ROUNDS[mode], warmup_rounds=0 if mode == "naive" else 1)
    benchmark.extra_info.update(patches=len(res.boxes), peak_rss_MB=round(mem.peak_mb), image=name,
                                baseline=mode == "naive")


def conv_flops(backbone: torch.nn.Module, x: torch.Tensor, window_step: int) -> int:
    """Multiply-adds ×2 of the trunk's Conv2d layers on ``x`` plus FC6 (as a 6×6 convolution) and FC7 (1×1)
    at every window."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total += 2 * k * out.numel()

    handles = [m.register_forward_hook(hook) for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        windows = backbone.window_head(backbone.trunk(x), window_step)
    for h in handles:
        h.remove()
    fc6, fc7 = backbone.classifier[1], backbone.classifier[4]
    per_window = fc6.in_features * fc6.out_features + fc7.in_features * fc7.out_features
    return total + 2 * per_window * windows.shape[-2] * windows.shape[-1]


def sgemm_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e9


def test_alexnet_conv_phase_vs_sgemm(benchmark, models, voc_image):
    """The dense pyramid's C1–C5 plus FC6/FC7-as-convolutions, as GFLOP/s beside torch.mm's sgemm GFLOP/s."""
    _, img = voc_image
    bb = models["alexnet"].backbone
    h, w = img.shape[:2]
    window_step = default_window_step(bb.window)
    planes = []
    for lam in PAPER_SCALES:
        side = min(w, h) / lam
        size = (dense_length(h, side, 224, 32 * window_step), dense_length(w, side, 224, 32 * window_step))
        planes.append(crop_resize(img, [[0, 0, w, h]], size=size, mean=bb.mean, std=bb.std))

    class Phase(torch.nn.Module):
        def forward(self, x):
            return bb.window_head(bb.trunk(x), window_step)

    phase = Phase()
    flops = sum(conv_flops(bb, p, window_step) for p in planes)

    def run():
        with torch.inference_mode():
            for p in planes:
                phase(p)

    benchmark.group = "alexnet conv phase"
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    gemm = sgemm_gflops()
    achieved = flops / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update(GFLOP=round(flops / 1e9, 1), GFLOPs=round(achieved, 1), sgemm_GFLOPs=round(gemm, 1),
                                of_sgemm=f"{100 * achieved / gemm:.0f}%")
