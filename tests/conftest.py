"""Shared fixtures: the real VOC data in ../shared (skipped clearly when absent), hypothesis settings, and the
device the Triton kernels run on (a GPU, or Triton's CPU interpreter)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from midlevel_fast.ops.backends import triton_interpreted
from tests.helpers import voc_root

# Without a GPU the Triton kernels run under Triton's CPU interpreter. triton.jit reads TRITON_INTERPRET when a
# kernel module is first imported, and the Triton test modules import theirs while pytest collects them: so it is
# set here, when pytest loads this conftest, before any test module. CPU tests are unaffected (backend="auto" keeps
# CPU tensors on the C++ kernel). One autotune config: one compile per shape on a GPU instead of timing five.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("MIDLEVEL_FAST_TRITON_AUTOTUNE", "0")

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


@pytest.fixture(scope="session")
def triton_device() -> str:
    """The device of the Triton tests' tensors: ``"cuda"``, or ``"cpu"`` under the interpreter (see above). Skips
    when triton is missing or TRITON_INTERPRET was overridden to disagree with the machine."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if triton_interpreted() != (device == "cpu"):
        pytest.skip(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r} does not suit a {device} machine")
    return device


@pytest.fixture(scope="session")
def lite0():
    """EfficientNet-Lite0 with its ImageNet weights (the backbone of the default model)."""
    from midlevel_fast import load_model

    return load_model("imagenet").backbone


@pytest.fixture(scope="session")
def photo():
    """scikit-image's chelsea photo (a cat), RGB uint8 HWC."""
    from tests.helpers import skimage_photo

    return skimage_photo("chelsea")
