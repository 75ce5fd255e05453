"""score_image on one 500×375 VOC image: naive per-patch loop vs batched vs dense, for EfficientNet-Lite0
(ImageNet weights) and AlexNet-shaped random weights; each backbone's dense conv phase against the machine's
limit of its dtype, measured in the same run (:mod:`benchmarks.limits`).

Run: ``pytest benchmarks/bench_score_image.py --benchmark-only`` (about 4 minutes on 2 cores: the naive loops
take ~20 s and ~55 s per round). ``dense before`` is the dense path as it was before prepared weights: the
unfused module, under bfloat16 autocast (which re-cast every weight on every call; the old default on CPUs with
native bf16) or in float32 (the old default elsewhere). For a CPU without bf16, run it with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``: ``precision="auto"`` then picks float32. ``dense int8``
(Lite0 only) is the opt-in ``precision="int8"``; its conv phase is measured against the int8 convolution.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from midlevel_fast import load_model, score_image
from midlevel_fast.backbones import alexnet
from midlevel_fast.backbones.prepared import copy_dtype, prepared
from midlevel_fast.model.classifier import imagenet_classifier
from midlevel_fast.features.dense import default_window_step, dense_planes

from .baselines import score_image_before
from .limits import phase_flops
from .peak_memory import PeakRSS

ROUNDS = {"naive": 1, "batched": 3, "dense": 5}
# "batched" and "dense" are the defaults (precision="auto": bf16 on CPUs with native bf16); "... fp32" force float32.
VARIANTS = {"naive": ("naive", "auto"), "batched fp32": ("batched", "fp32"), "batched": ("batched", "auto"),
            "dense fp32": ("dense", "fp32"), "dense": ("dense", "auto"), "dense int8": ("dense", "int8")}
# int8 exists for Lite0 only (midlevel_fast.backbones.int8).
CASES = [(b, v) for b in ("lite0", "alexnet") for v in VARIANTS if b == "lite0" or "int8" not in v]
PHASES = [(b, p) for b in ("lite0", "alexnet") for p in ("fp32", "bf16", "int8") if b == "lite0" or p != "int8"]


@pytest.fixture(scope="module")
def models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        alex = imagenet_classifier(alexnet(pretrained=False))
    return {"lite0": load_model("imagenet"), "alexnet": alex}


@pytest.mark.parametrize("backbone, variant", CASES)
def test_score_image(benchmark, models, voc_image, backbone, variant):
    name, img = voc_image
    model = models[backbone]
    mode, precision = VARIANTS[variant]
    benchmark.group = f"score_image {backbone} 500x375"
    with PeakRSS() as mem:
        res = benchmark.pedantic(score_image, args=(img, model), kwargs=dict(mode=mode, precision=precision),
                                 rounds=ROUNDS[mode], warmup_rounds=0 if mode == "naive" else 1)
    benchmark.extra_info.update(patches=len(res.windows), peak_rss_MB=round(mem.peak_mb), image=name,
                                baseline=mode == "naive")


@pytest.mark.parametrize("before", ["autocast bf16", "fp32"])
@pytest.mark.parametrize("backbone", ["lite0", "alexnet"])
def test_dense_before(benchmark, models, voc_image, backbone, before):
    """The dense path before prepared weights (the unfused module), for the speed-up of today's."""
    _, img = voc_image
    benchmark.group = f"score_image {backbone} 500x375"
    benchmark.pedantic(score_image_before, args=(img, models[backbone]),
                       kwargs=dict(autocast=before == "autocast bf16"), rounds=ROUNDS["dense"], warmup_rounds=1)
    benchmark.extra_info.update(variant=f"dense before, {before}")


@pytest.mark.parametrize("backbone, precision", PHASES)
def test_conv_phase(benchmark, models, voc_image, limits, backbone, precision):
    """The dense pyramid's trunk and window head (AlexNet: C1-C5, FC6 as a 6×6 and FC7 as a 1×1 convolution;
    Lite0: all 49 convolutions) on the nine planes, as GFLOP/s and % of the limit of its dtype."""
    _, img = voc_image
    bb = models[backbone].backbone
    step = default_window_step(bb.window)
    planes = dense_planes(bb, img)
    flops, layers = phase_flops(lambda p: bb.window_head(bb.trunk(p), step), planes, bb)
    net = prepared(bb, precision)
    cast = [p.to(copy_dtype(net)) for p in planes]

    def run():
        with torch.inference_mode():
            for p in cast:
                net.window_head(net.trunk(p), step)

    benchmark.group = "dense conv phase vs the machine's limit"
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    achieved = flops / benchmark.stats.stats.median / 1e9
    limit_name, limit = limits.of(precision)
    benchmark.extra_info.update(GFLOP=round(flops / 1e9, 1), GFLOPs=round(achieved, 1), limit=limit_name,
                                limit_GFLOPs=round(limit), of_limit=f"{100 * achieved / limit:.0f}%")
    if backbone == "lite0" and precision == "fp32":
        benchmark.extra_info["layers"] = layers
