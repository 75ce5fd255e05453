"""Shared fixtures: the real VOC data in ../shared (skipped clearly when absent) and hypothesis settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers import voc_root

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def voc() -> Path:
    root = voc_root()
    if root is None:
        pytest.skip("real VOC data not found: set MIDLEVEL_FAST_VOC or put VOCdevkit/VOC2012 in ../shared/data")
    return root


@pytest.fixture(scope="session")
def voc_val_ids(voc: Path) -> list[str]:
    return (voc / "ImageSets" / "Main" / "val.txt").read_text().split()
