"""midlevel_fast: mid-level CNN patch features (Oquab et al., CVPR 2014), made fast.

Public API only; see the README for conventions.
"""
from midlevel_fast.backends import BackendStatus, backends
from midlevel_fast.grid import PAPER_SCALES, PAPER_STRIDE, Grid, grid
from midlevel_fast.ops.crop_resize import IMAGENET_MEAN, IMAGENET_STD, PADDING_MODES, crop_resize

__all__ = [
    "BackendStatus",
    "Grid",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PADDING_MODES",
    "PAPER_SCALES",
    "PAPER_STRIDE",
    "backends",
    "crop_resize",
    "grid",
]
__version__ = "0.1.0"
