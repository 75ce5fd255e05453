"""GPU benchmarks: crop_resize backends against the PIL loop and the memory floor; dense score_image against naive.

Run: ``python benchmarks/bench_gpu.py [--json FILE]`` on a machine with a CUDA device (``benchmarks/gpu_check.sh``
runs it after the GPU tests). Without one it prints why and exits 0.

crop_resize: the 512 grid patches of a 500×375 image (a real VOC image when ``../shared`` is there, else a seeded
random one) at 224×224, uint8 image already on the GPU. Each backend is timed per call (tap tables included) with
CUDA events, median of repeated calls after warm-up (and Triton's autotuning). Floors: a device-to-device copy of
the same output bytes (``dst.copy_(src)``: reads and writes them) and a pure write of them (``dst.fill_``); the
write bandwidth a backend achieves is ``output bytes / time``. The naive baseline is the per-patch PIL loop on the
CPU (:func:`midlevel_fast.scoring.naive.crop_resize_pil`), as users write it.

score_image: ``mode="dense"`` vs ``"naive"`` (and ``"batched"``) on the GPU, default model (EfficientNet-Lite0;
seeded random weights when its weight package is absent: timings are the same).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
import warnings
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from midlevel_fast import backends, crop_resize, grid, output_maps, score_image  # noqa: E402
from midlevel_fast.scoring.naive import crop_resize_pil  # noqa: E402


def load_image() -> tuple[str, np.ndarray]:
    """(name, uint8 HWC) of the first 500×375 VOC val image, or a seeded random image of that size."""
    from PIL import Image

    env = os.environ.get("MIDLEVEL_FAST_VOC")
    root = Path(env) if env else REPO.parent / "shared" / "data" / "VOCdevkit" / "VOC2012"
    if (root / "JPEGImages").is_dir():
        for image_id in (root / "ImageSets" / "Main" / "val.txt").read_text().split():
            with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as im:
                if im.size == (500, 375):
                    return image_id, np.asarray(im.convert("RGB"))
    return "random 500x375", np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)


def gpu_ms(fn: Callable[[], object], reps: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` on the current stream, each call timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def wall_ms(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Median wall-clock milliseconds of ``fn``, the GPU synchronised after each call."""
    for _ in range(warmup):
        fn()
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def kernel_ms(fn: Callable[[], object], name_part: str, calls: int = 10) -> float | None:
    """Device time per call of the kernels whose name contains ``name_part``, from the torch profiler: the
    kernel alone, without the host work around it. ``None`` when the profiler saw no such kernel."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.device_time_total for e in prof.key_averages() if name_part in e.key)
    return total_us / calls / 1e3 if total_us > 0 else None


def bench_crop_resize(img: np.ndarray, rows: list[dict]) -> None:
    boxes = grid(img.shape[1], img.shape[0]).boxes
    group = f"crop_resize {len(boxes)} patches 224x224"
    pil = wall_ms(lambda: crop_resize_pil(img, boxes), reps=3)
    rows.append(dict(group=group, name="PIL loop (CPU, baseline)", ms=pil))
    cpu_out = torch.empty(len(boxes), 3, 224, 224)
    rows.append(dict(group=group, name=f"fused cpu fp32 ({torch.get_num_threads()} threads)",
                     ms=wall_ms(lambda: crop_resize(img, boxes, out=cpu_out), reps=5)))
    gimg = torch.from_numpy(img).cuda()
    for dtype in (torch.float32, torch.float16):
        tag = "fp32" if dtype == torch.float32 else "fp16"
        out = torch.empty(len(boxes), 3, 224, 224, dtype=dtype, device="cuda")
        nbytes = out.numel() * out.element_size()
        src = torch.randn_like(out)
        copy = gpu_ms(partial(out.copy_, src))
        fill = gpu_ms(partial(out.fill_, 1.0))
        rows.append(dict(group=group, name=f"device copy {tag} (floor)", ms=copy, write_GBps=nbytes / copy / 1e6))
        rows.append(dict(group=group, name=f"device write {tag}", ms=fill, write_GBps=nbytes / fill / 1e6))
        cpu_result = crop_resize(img, boxes, out_dtype=dtype).float()
        for backend in ("cuda", "triton"):
            status = backends()[backend]
            if not status.available:
                rows.append(dict(group=group, name=f"{backend} {tag}", skipped=status.detail))
                continue
            call = partial(crop_resize, gimg, boxes, backend=backend, out=out, out_dtype=dtype)
            call()  # compiles / autotunes first
            err = (out.float().cpu() - cpu_result).abs().max().item()
            ms = gpu_ms(call)
            rows.append(dict(group=group, name=f"{backend} {tag} (per call)", ms=ms, write_GBps=nbytes / ms / 1e6,
                             pct_of_copy=100 * copy / ms, pct_of_write=100 * fill / ms, vs_pil=pil / ms,
                             max_abs_err_vs_cpu=err))
            kms = kernel_ms(call, "crop_resize")
            if kms is not None:
                rows.append(dict(group=group, name=f"{backend} {tag} (kernel only)", ms=kms,
                                 write_GBps=nbytes / kms / 1e6, pct_of_copy=100 * copy / kms,
                                 pct_of_write=100 * fill / kms, vs_pil=pil / kms))


def bench_aggregate(img: np.ndarray, rows: list[dict]) -> None:
    g = torch.Generator().manual_seed(0)
    (h, w), m, c = img.shape[:2], 2000, 20
    xy = torch.rand(m, 2, generator=g) * torch.tensor([w, h])
    boxes = torch.cat([xy, xy + torch.rand(m, 2, generator=g) * 200], dim=1)
    probs = torch.softmax(torch.randn(m, c, generator=g), dim=1)
    group = f"output_maps {m} random windows, {c} classes, {w}x{h}"
    torch_ms = wall_ms(lambda: output_maps(boxes, probs, h, w), reps=5)
    rows.append(dict(group=group, name="torch prefix sums (CPU)", ms=torch_ms))
    if backends()["triton"].available:
        gprobs = probs.cuda()
        output_maps(boxes, gprobs, h, w, backend="triton")
        ms = gpu_ms(lambda: output_maps(boxes, gprobs, h, w, backend="triton"))
        err = (output_maps(boxes, gprobs, h, w, backend="triton").cpu() - output_maps(boxes, probs, h, w)).abs().max()
        rows.append(dict(group=group, name="triton fused", ms=ms, vs_cpu=torch_ms / ms, max_abs_err=err.item()))


def bench_score_image(img: np.ndarray, rows: list[dict]) -> None:
    from midlevel_fast.model import load_model

    try:
        model, weights = load_model(), "ImageNet weights"
    except ModuleNotFoundError:
        from midlevel_fast.backbones import efficientnet_lite0
        from midlevel_fast.model import imagenet_classifier

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model, weights = imagenet_classifier(efficientnet_lite0(pretrained=False)), "random weights"
    model = model.cuda().eval()
    group = f"score_image lite0 ({weights}) 500x375 on GPU"
    times = {}
    for mode, reps in (("naive", 1), ("batched", 3), ("dense", 5)):
        times[mode] = wall_ms(partial(score_image, img, model, mode=mode, device="cuda"), reps=reps)
        rows.append(dict(group=group, name=mode, ms=times[mode], vs_naive=times["naive"] / times[mode]))


def print_table(rows: list[dict]) -> None:
    group = None
    for r in rows:
        if r["group"] != group:
            group = r["group"]
            print(f"\n{group}\n| row | ms | write GB/s | % of copy | % of write | speed-up | note |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        if "skipped" in r:
            print(f"| {r['name']} | | | | | | skipped: {r['skipped']} |")
            continue
        speed = r.get("vs_pil", r.get("vs_naive", r.get("vs_cpu")))
        err = r.get("max_abs_err_vs_cpu", r.get("max_abs_err"))
        cells = [f"{r['ms']:.3f}", f"{r['write_GBps']:.0f}" if "write_GBps" in r else "",
                 f"{r['pct_of_copy']:.0f}" if "pct_of_copy" in r else "",
                 f"{r['pct_of_write']:.0f}" if "pct_of_write" in r else "",
                 f"{speed:.1f}x" if speed is not None else "", f"max |err| {err:.1e}" if err is not None else ""]
        print(f"| {r['name']} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--skip-score", action="store_true", help="skip the score_image benchmark")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device (torch.cuda.is_available() is False); nothing to benchmark")
        return 0
    torch.manual_seed(0)
    name, img = load_image()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, image: {name}")
    for backend, status in backends().items():
        print(f"  {backend}: {'yes' if status.available else 'no'} ({status.detail})")
    rows: list[dict] = []
    sections = [bench_crop_resize, bench_aggregate] + ([] if args.skip_score else [bench_score_image])
    failed = False
    for section in sections:
        # One device call gives one chance: a failing section reports and lets the others run.
        try:
            with torch.inference_mode():
                section(img, rows)
        except Exception:  # noqa: BLE001
            failed = True
            print(f"bench_gpu: {section.__name__} failed:\n{traceback.format_exc()}", file=sys.stderr)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                                             image=name, rows=rows), indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
