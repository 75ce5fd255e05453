"""Shared fixtures: the real VOC data in ../shared (skipped clearly when absent) and hypothesis settings."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]


def voc_root() -> Path | None:
    """``$MIDLEVEL_FAST_VOC`` or ``../shared/data/VOCdevkit/VOC2012`` beside the repository, if present."""
    env = os.environ.get("MIDLEVEL_FAST_VOC")
    root = Path(env) if env else REPO.parent / "shared" / "data" / "VOCdevkit" / "VOC2012"
    return root if (root / "JPEGImages").is_dir() else None


@pytest.fixture(scope="session")
def voc() -> Path:
    root = voc_root()
    if root is None:
        pytest.skip("real VOC data not found: set MIDLEVEL_FAST_VOC or put VOCdevkit/VOC2012 in ../shared/data")
    return root


@pytest.fixture(scope="session")
def voc_val_ids(voc: Path) -> list[str]:
    return (voc / "ImageSets" / "Main" / "val.txt").read_text().split()


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
