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

crop_resize vs CV-CUDA and DALI: the same 512 boxes of the same image, wall time per call (the device synchronised
after each, as every library runs on its own streams), each library's output bytes over the time as a share of the
device's write bandwidth (``dst.fill_`` of the same bytes). CV-CUDA (``cvcuda``): HQResize with antialias over an
ImageBatchVarShape that holds the image once per box with one ROI each (float32 and uint8 HWC out, not
normalised), and ResizeCropConvertReformat (no antialias, one call per box: its crop position is one per call;
one scale and offset for all channels). DALI (``nvidia.dali``): a pipeline of ``fn.resize`` (antialias, ROI per
sample) and ``fn.crop_mirror_normalize`` (CHW float32, ImageNet mean and std) on a batch of 512 copies of the
image (a DALI batch holds one sample per crop). A library that is not importable is skipped with the reason.

Collections: images per second over ``--images`` JPEG files (500×375; VOC when there, else seeded random) of
``score_images`` dense (fp32 and bf16) and batched at 1, 8, 32 and 128 images per chunk, ``score_image`` one image
at a time, and the pipeline a torch user writes (the grid's 512 boxes cropped with ``F.interpolate(antialias=True)``,
Lite0 under AMP float16 with channels_last, softmax and power mean), decoding included in all.

Also collected by pytest (``pytest benchmarks/bench_gpu.py``): one test per section, skipped without CUDA.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from midlevel_fast import (IMAGENET_MEAN, IMAGENET_STD, backends, crop_resize, grid, output_maps,  # noqa: E402
                           score_image, score_images)
from midlevel_fast.io.image_io import load_image as decode  # noqa: E402
from midlevel_fast.scoring.naive import crop_resize_pil  # noqa: E402

# Images per chunk of score_images in the collection benchmark.
BATCHES = (1, 8, 32, 128)


def voc_paths(n: int) -> list[Path]:
    """The first ``n`` (or fewer) 500×375 VOC val images, when the VOC data is there (``MIDLEVEL_FAST_VOC`` or
    ``../shared``)."""
    from PIL import Image

    env = os.environ.get("MIDLEVEL_FAST_VOC")
    root = Path(env) if env else REPO.parent / "shared" / "data" / "VOCdevkit" / "VOC2012"
    found: list[Path] = []
    if (root / "JPEGImages").is_dir():
        for image_id in (root / "ImageSets" / "Main" / "val.txt").read_text().split():
            path = root / "JPEGImages" / f"{image_id}.jpg"
            with Image.open(path) as im:
                if im.size == (500, 375):
                    found.append(path)
            if len(found) == n:
                break
    return found


def load_image() -> tuple[str, np.ndarray]:
    """(name, uint8 HWC) of the first 500×375 VOC val image, or a seeded random image of that size."""
    found = voc_paths(1)
    if found:
        return found[0].stem, decode(found[0])
    return "random 500x375", np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)


def collection_paths(n: int, folder: Path) -> tuple[list[Path], str]:
    """``n`` 500×375 JPEG paths and what they are: the VOC val images (repeated when fewer), else seeded random
    images written into ``folder``."""
    found = voc_paths(n)
    if found:
        return [found[i % len(found)] for i in range(n)], f"VOC val, {len(found)} distinct"
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(folder / f"random{i:03d}.jpg")
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(paths[-1], quality=90)
    return paths, "seeded random"


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


def gpu_model() -> tuple[torch.nn.Module, str]:
    """The default model on the GPU and what its weights are (seeded random ones when the weight package is
    absent: timings are the same). Built outside inference mode, which the sections run in: inference-tensor
    parameters have no version counter, which the prepared copies (:mod:`midlevel_fast.backbones.prepared`) read."""
    from midlevel_fast.model.classifier import load_model

    with torch.inference_mode(False):
        try:
            model, weights = load_model(), "ImageNet weights"
        except ModuleNotFoundError:
            from midlevel_fast.backbones import efficientnet_lite0
            from midlevel_fast.model.classifier import imagenet_classifier

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                model, weights = imagenet_classifier(efficientnet_lite0(pretrained=False)), "random weights"
        return model.cuda().eval(), weights


def bench_score_image(img: np.ndarray, rows: list[dict]) -> None:
    model, weights = gpu_model()
    group = f"score_image lite0 ({weights}) 500x375 on GPU"
    times = {}
    for mode, reps in (("naive", 1), ("batched", 3), ("dense", 5)):
        times[mode] = wall_ms(partial(score_image, img, model, mode=mode, device="cuda"), reps=reps)
        rows.append(dict(group=group, name=mode, ms=times[mode], vs_naive=times["naive"] / times[mode]))


def write_share() -> Callable[[int, float], float]:
    """``(nbytes, ms) -> %`` of the device's write bandwidth that writing ``nbytes`` in ``ms`` achieves: the time
    of ``fill_`` (measured once, on the float32 bytes of 512 patches; scaled by bytes) over ``ms``."""
    probe = torch.empty(512 * 3 * 224 * 224, device="cuda")
    fill_ms_per_byte = gpu_ms(partial(probe.fill_, 1.0)) / (probe.numel() * probe.element_size())
    return lambda nbytes, ms: 100 * fill_ms_per_byte * nbytes / ms


def normalised(hwc: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3)`` RGB in 0..255 -> ``(N, 3, H, W)`` float32 ImageNet-normalised, as crop_resize writes it."""
    mean = torch.tensor(IMAGENET_MEAN, device=hwc.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=hwc.device).view(1, 3, 1, 1)
    return (hwc.permute(0, 3, 1, 2).float() / 255 - mean) / std


def cvcuda_runs(gimg: torch.Tensor, boxes: torch.Tensor) -> dict[str, tuple[Callable[[], object], int,
                                                                           Callable[[], torch.Tensor] | None]]:
    """CV-CUDA's ways to the 512 crops: ``name -> (call, output bytes, first crops as normalised NCHW or None)``.
    Raises ``ImportError`` when ``cvcuda`` is missing."""
    cvcuda = importlib.import_module("cvcuda")
    # CV-CUDA >= 0.14 exports the nvcv types from cvcuda; older releases keep them in nvcv.
    nv = cvcuda if hasattr(cvcuda, "ImageBatchVarShape") else importlib.import_module("nvcv")
    n, (h, w) = len(boxes), gimg.shape[:2]
    src = nv.ImageBatchVarShape(n)
    src.pushback([nv.as_image(gimg, nv.Format.RGB8)] * n)  # the one image, once per box: no copy
    rois = [(y0, x0, y1, x1) for x0, y0, x1, y1 in boxes.tolist()]
    runs = {}
    for tag, fmt, size in (("float32", nv.Format.RGBf32, 4), ("uint8", nv.Format.RGB8, 1)):
        dst = nv.ImageBatchVarShape(n)
        dst.pushback([nv.Image((224, 224), fmt) for _ in range(n)])
        call = partial(cvcuda.hq_resize_into, dst, src, antialias=True, roi=rois, interpolation=cvcuda.Interp.LINEAR)
        first = partial(lambda d: normalised(torch.stack([torch.as_tensor(d[i].cuda(), device="cuda")
                                                          for i in range(8)])), dst)
        runs[f"CV-CUDA HQResize antialias ({tag} HWC, not normalised)"] = (call, n * 224 * 224 * 3 * size, first)
    # ResizeCropConvertReformat: the whole image resized so that the box's side becomes 224, then the box cropped,
    # one call per box; normalised with one scale and offset (ImageNet's mean and std averaged over channels).
    out = torch.empty(n, 3, 224, 224, device="cuda")
    src_t = nv.as_tensor(gimg.unsqueeze(0), "NHWC")
    scale = 1 / (255 * statistics.mean(IMAGENET_STD))
    offset = -statistics.mean(IMAGENET_MEAN) / statistics.mean(IMAGENET_STD)
    calls = []
    for i, (x0, y0, x1, _) in enumerate(boxes.tolist()):
        f = 224 / (x1 - x0)
        rw, rh = max(224, round(w * f)), max(224, round(h * f))
        pos = (min(round(x0 * f), rw - 224), min(round(y0 * f), rh - 224))  # (x, y), as the binding takes it
        calls.append(partial(cvcuda.resize_crop_convert_reformat_into, nv.as_tensor(out[i: i + 1], "NCHW"), src_t,
                             (rw, rh), cvcuda.Interp.LINEAR, pos, scale=scale, offset=offset))
    runs["CV-CUDA ResizeCropConvertReformat, no antialias (float32 NCHW, 1 call per box)"] = (
        lambda: [c() for c in calls], out.numel() * 4, None)
    return runs


def dali_runs(gimg: torch.Tensor, boxes: torch.Tensor) -> dict[str, tuple[Callable[[], object], int,
                                                                         Callable[[], torch.Tensor] | None]]:
    """DALI's way to the 512 crops, as :func:`cvcuda_runs` gives them. Raises ``ImportError`` when
    ``nvidia.dali`` is missing."""
    dali = importlib.import_module("nvidia.dali")
    fn, types = dali.fn, dali.types
    n = len(boxes)
    lo = [np.array([y0, x0], dtype=np.float32) for x0, y0, _, _ in boxes.tolist()]
    hi = [np.array([y1, x1], dtype=np.float32) for _, _, x1, y1 in boxes.tolist()]
    runs = {}
    for antialias in (True, False):
        pipe = dali.Pipeline(batch_size=n, num_threads=4, device_id=torch.cuda.current_device(),
                             prefetch_queue_depth=1)
        with pipe:
            images = fn.external_source(name="images", device="gpu", layout="HWC")
            roi_lo = fn.external_source(name="lo")
            roi_hi = fn.external_source(name="hi")
            crops = fn.resize(images, size=[224, 224], roi_start=roi_lo, roi_end=roi_hi, antialias=antialias,
                              interp_type=types.INTERP_LINEAR, dtype=types.FLOAT)
            pipe.set_outputs(fn.crop_mirror_normalize(crops, mean=[255 * m for m in IMAGENET_MEAN],
                                                      std=[255 * s for s in IMAGENET_STD], output_layout="CHW",
                                                      dtype=types.FLOAT))
        pipe.build()

        def run(pipe=pipe):
            pipe.feed_input("images", [gimg] * n)  # DALI copies each sample into its batch
            pipe.feed_input("lo", lo)
            pipe.feed_input("hi", hi)
            return pipe.run()[0]

        def first(run=run):
            out = np.array(run().as_cpu().as_tensor())[:8]
            return torch.from_numpy(out).cuda()

        tag = "antialias" if antialias else "no antialias"
        runs[f"DALI fn.resize {tag} + fn.crop_mirror_normalize (float32 CHW)"] = (run, n * 3 * 224 * 224 * 4, first)
    return runs


def bench_competitors(img: np.ndarray, rows: list[dict]) -> None:
    boxes = grid(img.shape[1], img.shape[0]).boxes
    group = f"crop_resize vs CV-CUDA and DALI: {len(boxes)} grid boxes 224x224 of one image, per call"
    gimg = torch.from_numpy(np.ascontiguousarray(img)).cuda()
    out = torch.empty(len(boxes), 3, 224, 224, device="cuda")
    backend = "cuda" if backends()["cuda"].available else "triton"
    ours = partial(crop_resize, gimg, boxes, out=out, backend=backend)
    ours()
    reference = out[:8].clone()
    share = write_share()
    ours_ms = wall_ms(ours, reps=20)
    nbytes = out.numel() * out.element_size()
    rows.append(dict(group=group, name=f"midlevel_fast crop_resize {backend} (float32 NCHW, normalised)", ms=ours_ms,
                     write_GBps=nbytes / ours_ms / 1e6, pct_of_write=share(nbytes, ours_ms)))
    for library, runs, wheel in (("cvcuda", cvcuda_runs, "cvcuda-cu13"),
                                 ("nvidia.dali", dali_runs, "nvidia-dali-cuda130")):
        try:
            found = runs(gimg, boxes)
        except ImportError as e:
            rows.append(dict(group=group, name=library, skipped=f"not importable ({e}); pip install {wheel}"))
            continue
        except Exception as e:  # noqa: BLE001 - an API change in one library must not hide the other's rows
            rows.append(dict(group=group, name=library, skipped=f"setup failed: {type(e).__name__}: {e}"))
            continue
        for name, (call, size, first) in found.items():
            try:
                call()
                ms = wall_ms(call, reps=10)
                row = dict(group=group, name=name, ms=ms, write_GBps=size / ms / 1e6, pct_of_write=share(size, ms),
                           ours_faster=ms / ours_ms)
                if first is not None:  # the first crops against ours, in normalised units
                    row["max_abs_err"] = (first() - reference).abs().max().item()
                rows.append(row)
            except Exception as e:  # noqa: BLE001
                rows.append(dict(group=group, name=name, skipped=f"failed: {type(e).__name__}: {e}"))


def torch_pipeline(paths: list[Path], model: torch.nn.Module) -> list[torch.Tensor]:
    """The image scores ``(C,)`` a torch user gets without this library: per image the grid's boxes cropped at
    whole pixels (rounded outward) and resized with ``F.interpolate(bilinear, antialias=True)``, normalised, Lite0
    under AMP (float16) on channels_last patches, softmax, power mean."""
    bb, k = model.backbone, model.info.k
    mean = torch.tensor(bb.mean, device="cuda").view(1, 3, 1, 1)
    std = torch.tensor(bb.std, device="cuda").view(1, 3, 1, 1)
    scores = []
    for path in paths:
        img = torch.from_numpy(decode(path)).cuda().permute(2, 0, 1).unsqueeze(0).float() / 255
        g = grid(img.shape[3], img.shape[2], model.info.scales, model.info.grid_step)
        patches = torch.cat([F.interpolate(img[:, :, int(y0): math.ceil(y1), int(x0): math.ceil(x1)], size=(224, 224),
                                           mode="bilinear", antialias=True, align_corners=False)
                             for x0, y0, x1, y1 in g.boxes.tolist()])
        patches = ((patches - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16):
            probs = model.probabilities(bb(patches)).float()
        scores.append(probs.pow(k).mean(0))  # the paper's score, 1/M Σ y^k
    return scores


def bench_collections(img: np.ndarray, rows: list[dict], n_images: int = max(BATCHES)) -> None:
    model, weights = gpu_model()
    with tempfile.TemporaryDirectory() as tmp:
        paths, source = collection_paths(n_images, Path(tmp))
        group = f"collections: {n_images} JPEGs 500x375 ({source}), lite0 ({weights}) on GPU, ms per image"
        # Each row's first image against score_image of it in the same mode (the torch pipeline: in the batched
        # mode, whose boxes it crops): max |score difference|.
        reference = {mode: score_image(paths[0], model, mode=mode, device="cuda", precision="fp32").scores
                     for mode in ("dense", "batched")}
        configs: dict[str, tuple[str, Callable[[list[Path]], list]]] = {
            "score_image one by one (dense)": ("dense", lambda ps: [score_image(p, model, device="cuda") for p in ps]),
            "torch pipeline: F.interpolate crops + Lite0 AMP": ("batched", partial(torch_pipeline, model=model)),
        }
        for mode, precision in (("dense", "fp32"), ("dense", "bf16"), ("batched", "fp32")):
            for b in BATCHES:
                configs[f"score_images {mode} {precision} batch {b}"] = (mode, partial(
                    score_images, model=model, mode=mode, precision=precision, batch_images=b, device="cuda"))
        base_ms = None
        for name, (mode, run) in configs.items():
            run(paths[: min(16, n_images)])  # warm-up: plans and allocations per shape
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            results = run(paths)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1e3 / n_images
            base_ms = ms if base_ms is None else base_ms
            first = results[0] if isinstance(results[0], torch.Tensor) else results[0].scores
            rows.append(dict(group=group, name=name, ms=ms, images_per_s=1e3 / ms, vs_one_by_one=base_ms / ms,
                             max_abs_err=(first.cpu() - reference[mode]).abs().max().item()))
            print(f"  {name}: {ms:.1f} ms per image", flush=True)  # the rows so far, should a timeout cut the run


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
        speed = next((r[k] for k in ("vs_pil", "vs_naive", "vs_cpu", "vs_one_by_one") if k in r), None)
        err = r.get("max_abs_err_vs_cpu", r.get("max_abs_err"))
        notes = [f"max |err| {err:.1e}" if err is not None else "",
                 f"{r['images_per_s']:.1f} images/s" if "images_per_s" in r else "",
                 f"ours {r['ours_faster']:.2f}x faster" if "ours_faster" in r else ""]
        cells = [f"{r['ms']:.3f}", f"{r['write_GBps']:.0f}" if "write_GBps" in r else "",
                 f"{r['pct_of_copy']:.0f}" if "pct_of_copy" in r else "",
                 f"{r['pct_of_write']:.0f}" if "pct_of_write" in r else "",
                 f"{speed:.1f}x" if speed is not None else "", ", ".join(n for n in notes if n)]
        print(f"| {r['name']} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--skip-score", action="store_true", help="skip the score_image benchmark")
    parser.add_argument("--skip-collections", action="store_true", help="skip the score_images benchmark")
    parser.add_argument("--images", type=int, default=max(BATCHES), help="images in the collection benchmark")
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
    sections = [bench_crop_resize, bench_competitors, bench_aggregate]
    sections += [] if args.skip_score else [bench_score_image]
    sections += [] if args.skip_collections else [partial(bench_collections, n_images=args.images)]
    failed = False
    for section in sections:
        # One device call gives one chance: a failing section reports and lets the others run, and each section's
        # table and the JSON so far are written as soon as it ends, so a run cut short by a timeout keeps them.
        done = len(rows)
        try:
            with torch.inference_mode():
                section(img, rows)
        except Exception:  # noqa: BLE001
            failed = True
            print(f"bench_gpu: {section_name(section)} failed:\n{traceback.format_exc()}", file=sys.stderr)
        print_table(rows[done:])
        if args.json:
            args.json.write_text(json.dumps(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                                                 image=name, rows=rows), indent=1))
    return 1 if failed else 0


def section_name(section: Callable) -> str:
    return getattr(section, "__name__", None) or section.func.__name__  # a partial has no __name__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("section", [bench_crop_resize, bench_competitors, bench_aggregate, bench_score_image,
                                     bench_collections], ids=section_name)
def test_section(section: Callable[[np.ndarray, list[dict]], None]) -> None:
    """Each section under pytest (``pytest benchmarks/bench_gpu.py -s`` prints its table): it runs and gives rows."""
    rows: list[dict] = []
    with torch.inference_mode():
        section(load_image()[1], rows)
    print_table(rows)
    assert rows


if __name__ == "__main__":
    sys.exit(main())
