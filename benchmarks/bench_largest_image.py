"""Peak resident memory of ``score_image`` on the largest image file it accepts, against a 500×375 photo in the
same run: each call in a fresh process (``ru_maxrss`` of that process, so nothing an earlier benchmark allocated
counts), the file a square JPEG of the largest accepted pixel count (a smooth gradient: the JPEG is small, the
decoded image is not).

Run: ``pytest benchmarks/bench_largest_image.py --benchmark-only`` (about a minute on 2 cores). The peak is in
each row's ``peak_rss_MB``; ``image_MB`` is the decoded RGB image alone.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from midlevel_fast.io.image_io import max_pixels

# The child: score one file, then report its own peak RSS (Linux reports ru_maxrss in KiB).
CHILD = """
import json, resource, sys
import midlevel_fast
res = midlevel_fast.score_image(sys.argv[1], mode=sys.argv[2])
print(json.dumps({"windows": len(res.windows), "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def largest_side() -> int:
    """The side of the largest square image file that decodes: our limit, which is Pillow's bomb guard (twice
    ``MAX_IMAGE_PIXELS``)."""
    return math.isqrt(max_pixels())


def gradient_jpeg(path: Path, width: int, height: int) -> Path:
    """A ``width``×``height`` JPEG of two crossed gradients."""
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, height, dtype=np.float32).astype(np.uint8)[:, None]
    img[..., 2] = 128
    Image.fromarray(img).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, int, int]]:
    tmp = tmp_path_factory.mktemp("largest")
    side = largest_side()
    return {"500x375": (gradient_jpeg(tmp / "small.jpg", 500, 375), 500, 375),
            "largest": (gradient_jpeg(tmp / "largest.jpg", side, side), side, side)}


def score_in_child(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, str(path), mode], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["dense", "batched"])
@pytest.mark.parametrize("size", ["500x375", "largest"])
def test_peak_rss_of_score_image(benchmark, files, size, mode):
    path, width, height = files[size]
    benchmark.group = f"score_image peak RSS, {mode}"
    row = benchmark.pedantic(score_in_child, args=(path, mode), rounds=1, iterations=1)
    benchmark.extra_info.update(image=f"{width}x{height}", mode=mode, windows=row["windows"],
                                peak_rss_MB=round(row["peak_kib"] / 1024), image_MB=round(width * height * 3 / 2**20),
                                baseline=size == "500x375")
