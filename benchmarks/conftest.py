"""Benchmark helpers: a real VOC image when ../shared is there, and a summary of medians as ratios.

Each benchmark puts ``group`` and, for the row every other row is compared with, ``extra_info["baseline"]``.
At the end of the run a table prints, per group, the median of each row and its speed-up over the baseline.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers import voc_root

from .limits import Limits, measure_limits

# The limits measured in this run, printed with the summary.
_MEASURED: list[Limits] = []


@pytest.fixture(scope="session")
def limits() -> Limits:
    """This machine's fp32/bf16 GEMM and convolution rates and CPU features, measured once per run."""
    if not _MEASURED:
        _MEASURED.append(measure_limits())
    return _MEASURED[0]


@pytest.fixture(scope="session")
def voc_image() -> tuple[str, np.ndarray]:
    """(name, uint8 HWC) of the first 500×375 VOC val image, or scikit-image's ``coffee`` photo resized to that
    size when the VOC data is absent (a real photo either way: sparsity and value ranges match real use)."""
    root = voc_root()
    if root is not None:
        for image_id in (root / "ImageSets" / "Main" / "val.txt").read_text().split():
            with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as im:
                if im.size == (500, 375):
                    # np.array, not asarray: a writable copy, which torch.from_numpy takes without a warning.
                    return image_id, np.array(im.convert("RGB"))
    from skimage import data as skimage_data

    return "skimage coffee 500x375", np.array(Image.fromarray(skimage_data.coffee()).resize((500, 375), Image.BILINEAR))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group or "", []).append(bench)
    terminalreporter.section("midlevel_fast: medians and speed-ups")
    for lim in _MEASURED:
        terminalreporter.write_line(f"CPU: {lim.cpu}")
        terminalreporter.write_line(f"limits, GFLOP/s: fp32 sgemm 2048^3 {lim.sgemm:.0f}, bf16 GEMM 4096^3 "
                                    f"{lim.bf16_gemm:.0f}, fp32 conv {lim.fp32_conv:.0f}, bf16 conv "
                                    f"{lim.bf16_conv:.0f}, int8 conv {lim.int8_conv:.0f} GOP/s (AlexNet conv2 shape, "
                                    "8 patches, channels_last)")
    layers: dict[str, int] = {}
    for name, benches in groups.items():
        base = next((b for b in benches if b.extra_info.get("baseline")), None)
        terminalreporter.write_line(f"[{name}]")
        for b in sorted(benches, key=lambda b: b.stats.median, reverse=True):
            med = b.stats.median * 1e3
            ratio = f"{base.stats.median / b.stats.median:8.2f}x" if base else ""
            extra = "  ".join(f"{k}={v}" for k, v in b.extra_info.items() if k not in ("baseline", "layers"))
            terminalreporter.write_line(f"  {b.name:<40} {med:10.2f} ms {ratio}  {extra}")
            layers = b.extra_info.get("layers", layers)
    if layers:
        # The FLOPs of each layer of the one phase that reports them (Lite0's dense pass), largest first.
        total = sum(layers.values())
        terminalreporter.write_line(f"[FLOPs per layer, {total / 1e9:.1f} GFLOP in all]")
        for name, flops in sorted(layers.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"  {name:<50} {flops / 1e9:8.3f} GFLOP {100 * flops / total:5.1f}%")
