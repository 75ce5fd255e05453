"""midlevel_fast: mid-level CNN patch features (Oquab et al., CVPR 2014), made fast.

Public API only; see docs/api.md for conventions.
"""
# The one version: pyproject.toml reads it from here, ``midlevel-fast --version`` from the installed metadata, and
# CHANGELOG.md's newest entry names it (tests/test_packaging.py).
__version__ = "0.4.0"

from midlevel_fast.features.dense import DenseWindows, dense_windows
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP, Grid, grid
from midlevel_fast.features.proposals import ProposalConfig
from midlevel_fast.features.roi import RoiConfig
from midlevel_fast.io.image_io import load_image
from midlevel_fast.model.box_regression import BoxRegression
from midlevel_fast.model.classifier import PatchClassifier, load_model
from midlevel_fast.model.detector import RoiDetector
from midlevel_fast.model.head import AdaptationHead, HeadInfo, load_head, save_head
from midlevel_fast.model.presence import Calibration
from midlevel_fast.ops.aggregate import output_maps, power_mean
from midlevel_fast.ops.backends import BackendStatus, backends
from midlevel_fast.ops.crop_resize import IMAGENET_MEAN, IMAGENET_STD, PADDING_MODES, crop_resize
from midlevel_fast.runtime.malloc import tune_malloc
from midlevel_fast.scaleout.collection import CollectionResult, score_collection
from midlevel_fast.scoring.boxes import BoxScores, score_boxes
from midlevel_fast.scoring.detections import Detection
from midlevel_fast.scoring.images import score_images
from midlevel_fast.scoring.options import ScoreOptions
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.scoring.roi_detections import roi_detections
from midlevel_fast.scoring.score import score_image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PADDING_MODES",
    "PAPER_SCALES",
    "PAPER_STEP",
    "AdaptationHead",
    "BackendStatus",
    "BoxRegression",
    "BoxScores",
    "Calibration",
    "CollectionResult",
    "DenseWindows",
    "Detection",
    "Grid",
    "HeadInfo",
    "PatchClassifier",
    "ProposalConfig",
    "RoiConfig",
    "RoiDetector",
    "ScoreOptions",
    "ScoreResult",
    "backends",
    "crop_resize",
    "dense_windows",
    "grid",
    "load_head",
    "load_image",
    "load_model",
    "output_maps",
    "power_mean",
    "roi_detections",
    "save_head",
    "score_boxes",
    "score_collection",
    "score_image",
    "score_images",
    "tune_malloc",
]
