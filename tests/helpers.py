"""Helpers shared by the test modules (imported from here, never from another test module): image and box
generators, the tolerance table, the oracle with the public op's argument conventions, synthetic VOC trees and COCO
files, test photos and networks, relative errors, toy and synthetic feature caches."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from midlevel_fast import PADDING_MODES, crop_resize
from midlevel_fast.backbones import AlexNet, Backbone, alexnet
from midlevel_fast.features.grid import grid
from midlevel_fast.cache.feature_cache import CacheConfig, FeatureCache
from midlevel_fast.training.labels import DROPPED, patch_labels
from midlevel_fast.datasets.voc import VocImage, VocObject
from tests.oracle.crop_resize import crop_resize_reference

# ImageNet statistics in [0, 1] units, restated so the oracle's defaults do not come from the package.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REPO = Path(__file__).resolve().parents[1]


def voc_root() -> Path | None:
    """``$MIDLEVEL_FAST_VOC`` or ``../shared/data/VOCdevkit/VOC2012`` beside the repository, if present."""
    env = os.environ.get("MIDLEVEL_FAST_VOC")
    root = Path(env) if env else REPO.parent / "shared" / "data" / "VOCdevkit" / "VOC2012"
    return root if (root / "JPEGImages").is_dir() else None


def experiment_voc_root(given: str | None) -> Path:
    """The VOC root an experiment script runs on: ``given`` (its ``--voc``), else :func:`voc_root`; exits with a
    message when there is none."""
    root = Path(given) if given else voc_root()
    if root is None:
        raise SystemExit("VOC data not found (--voc or MIDLEVEL_FAST_VOC)")
    return root


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# (out_dtype, max abs error against the float64 reference, in normalised units)
TOLERANCES = [(torch.float32, 1e-4), (torch.float16, 1e-2)]


def reference(image, boxes, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, antialias=True, padding_mode="edge",
              **_ignored) -> torch.Tensor:
    """The oracle with :func:`midlevel_fast.crop_resize`'s argument conventions (numpy or torch image, int size,
    3-value mean/std on grey images averaged), float32 ``(N, C, h, w)``."""
    img = torch.as_tensor(np.ascontiguousarray(image))
    if img.dtype == torch.uint8 and img.ndim == 2:
        img = img[:, :, None]
    c = img.shape[2] if img.dtype == torch.uint8 else img.shape[0]
    per_channel = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (mean, std)]
    mean_v, std_v = ([float(v.mean())] * c if len(v) != c else v.tolist() for v in per_channel)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return crop_resize_reference(img, torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4), hw, mean_v, std_v,
                                 antialias, padding_mode).float()


def random_image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)


@st.composite
def box_strategy(draw, w: int, h: int):
    def axis(length: int) -> tuple[float, float]:
        start = draw(st.floats(-1.5 * length - 2, 2 * length + 2, allow_nan=False))
        kind = draw(st.sampled_from(["degenerate", "subpixel", "one", "any", "larger"]))
        extent = {
            "degenerate": 0.0,
            "subpixel": draw(st.floats(0.01, 0.99)),
            "one": 1.0,
            "any": draw(st.floats(0.0, 1.2 * length + 1)),
            "larger": draw(st.floats(length, 3 * length + 3)),
        }[kind]
        return start, start + extent

    x0, x1 = axis(w)
    y0, y1 = axis(h)
    return [x0, y0, x1, y1]


@st.composite
def case(draw):
    big = draw(st.booleans())
    h = draw(st.integers(1, 600 if big else 40))
    w = draw(st.integers(1, 800 if big else 40))
    c = draw(st.sampled_from([1, 3]))
    n = draw(st.integers(1, 3))
    boxes = [draw(box_strategy(w, h)) for _ in range(n)]
    size = draw(st.sampled_from([1, 7, 224, 300, (5, 9)]))
    return h, w, c, boxes, size


def assert_matches_reference(got: torch.Tensor, image, boxes, atol: float, **kw) -> None:
    """``got`` (on any device), the output of ``crop_resize(image, boxes, **kw)``, is contiguous, of the dtype asked
    for, and within ``atol`` of the oracle."""
    want = reference(image, boxes, **kw)
    assert got.dtype == kw.get("out_dtype", torch.float32) and got.is_contiguous() and got.shape == want.shape
    torch.testing.assert_close(got.cpu().float(), want, atol=atol, rtol=0)


def matches_reference_test(backend: str, max_examples: int | None = None):
    """The property every CPU-tensor backend of crop_resize holds, as the test function of that backend's module:
    on random images and boxes (:func:`case`), every padding mode and out_dtype, with or without antialias, it
    agrees with the oracle within the tolerance table."""

    @pytest.mark.parametrize("out_dtype,atol", TOLERANCES)
    @pytest.mark.parametrize("padding_mode", PADDING_MODES)
    @settings(max_examples=max_examples) if max_examples else (lambda test: test)
    @given(data=case(), antialias=st.booleans(), seed=st.integers(0, 2**16))
    def test(data, padding_mode, out_dtype, atol, antialias, seed):
        h, w, c, boxes, size = data
        img = random_image(h, w, c, seed)
        kw = dict(size=size, padding_mode=padding_mode, out_dtype=out_dtype, antialias=antialias)
        assert_matches_reference(crop_resize(img, boxes, backend=backend, **kw), img, boxes, atol, **kw)

    return test


W, H = 40, 30  # every test image is 40x30 unless said otherwise


def write_image(path, seed: int, size=(W, H), exif_orientation: int | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if exif_orientation is None:
        im.save(path)
    else:
        exif = Image.Exif()
        exif[274] = exif_orientation
        im.save(path, exif=exif)
    return path


def coco_data(images=None, annotations=None, categories=None) -> dict:
    """A COCO object of two images (``im/a.jpg`` with its size, ``im/b.jpg`` without), four annotations (one
    crowd) and three categories; each part replaceable."""
    return {
        "images": [{"id": 1, "file_name": "im/a.jpg", "width": W, "height": H}, {"id": 2, "file_name": "im/b.jpg"}]
        if images is None else images,
        "annotations": [{"id": 10, "image_id": 1, "bbox": [1, 2, 10, 20], "category_id": 3, "iscrowd": 0},
                        {"id": 11, "image_id": 1, "bbox": [0, 0, 40, 30], "category_id": 3, "iscrowd": 1},
                        {"id": 12, "image_id": 2, "bbox": [0.5, 0, 39.5, 30], "category_id": 1},
                        {"id": 13, "image_id": 1, "bbox": [1, 2, 10, 21], "category_id": 1}]
        if annotations is None else annotations,
        "categories": [{"id": 1, "name": "walk"}, {"id": 3, "name": "jump"}, {"id": 4, "name": "sit"}]
        if categories is None else categories,
    }


def obj(name="cat", box=(1, 1, W, H), difficult="0", truncated="0", extra="") -> str:
    flags = "".join(f"<{t}>{v}</{t}>" for t, v in (("difficult", difficult), ("truncated", truncated)) if v is not None)
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box) if v is not None)
    return f"<object><name>{name}</name>{flags}<bndbox>{coords}</bndbox>{extra}</object>"


def make_voc(root: Path, objects: str = "", size: str | None = None, image_id: str = "img", jpeg: bool = True,
             xml: str | None = None, split: str = "img\n") -> Path:
    """A one-image VOC tree: a W×H JPEG and an annotation whose body is ``objects``."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    if jpeg:
        Image.new("RGB", (W, H), (90, 120, 30)).save(root / "JPEGImages" / f"{image_id}.jpg")
    size = f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>" if size is None else size
    text = f"<annotation><filename>{image_id}.jpg</filename>{size}{objects}</annotation>" if xml is None else xml
    (root / "Annotations" / f"{image_id}.xml").write_text(text)
    (root / "ImageSets" / "Main" / "train.txt").write_text(split)
    return root


def skimage_photo(name: str) -> np.ndarray:
    """A scikit-image test photo (``"chelsea"``, ``"astronaut"``, ``"coffee"``...) as RGB uint8 HWC; skips the test
    when scikit-image is missing."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    return np.ascontiguousarray(getattr(skimage_data, name)())


def random_alexnet() -> AlexNet:
    """AlexNet with seeded random weights (for shape and geometry tests), its "random weights" warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return alexnet(pretrained=False)


def rel_max(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|``, the relative error used for logits."""
    return ((a - b).abs().max() / b.abs().max()).item()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||``, the relative error used for feature vectors."""
    return ((a - b).norm() / b.norm()).item()


# A toy feature cache: a deterministic stand-in for the CNN (per-box channel means and spreads of three fixed
# boxes) and small random PNGs to run it on.
TOY_CACHE_CONFIG = CacheConfig(backbone="toy", mode="dense", scales=[1.0, 2.0], grid_step=1 / 3, window_step=2,
                               feature_dim=6)


def toy_extract(img: np.ndarray, image_id: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features (3, 6), boxes (3, 4), scale_index (3,))`` of an RGB uint8 HWC image (``image_id`` unused)."""
    h, w = img.shape[:2]
    boxes = torch.tensor([[0, 0, w, h], [0, 0, w / 2, h / 2], [w / 2, h / 2, w, h]], dtype=torch.float32)
    feats = []
    for x0, y0, x1, y1 in boxes.int().tolist():
        patch = img[y0: max(y1, y0 + 1), x0: max(x1, x0 + 1)].reshape(-1, 3).astype(np.float32)
        feats.append(np.concatenate([patch.mean(0), patch.std(0)]) / 255)
    return torch.from_numpy(np.stack(feats)), boxes, torch.tensor([0, 1, 1])


def write_toy_images(folder: Path, n: int) -> list[tuple[str, str]]:
    """``n`` random PNGs ``img00.png``... of ``(20 + i) x 30`` pixels: ``(image_id, path)`` for a cache build."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(p)
        items.append((f"img{i:02d}", str(p)))
    return items


# A synthetic training cache whose features carry the class of the object a patch sits on.
SYNTHETIC_CLASSES = ["cat", "dog", "bus"]
SYNTHETIC_DIM = 16


def synthetic_cache(folder: Path, n_images: int, seed: int) -> tuple[FeatureCache, list[VocImage]]:
    """Images of 100x80 with one or two objects on the paper's 3-scale grid; a patch's feature is its label's
    prototype plus noise (dropped patches: the mean of the class prototypes), so a head can learn the labels
    exactly."""
    rng = np.random.default_rng(seed)
    config = CacheConfig(backbone="toy", mode="dense", scales=[1.0, 2.0, 3.0], grid_step=1 / 3, window_step=None,
                         feature_dim=SYNTHETIC_DIM)
    cache = FeatureCache(folder / f"cache{seed}", config)
    proto = rng.normal(size=(len(SYNTHETIC_CLASSES) + 1, SYNTHETIC_DIM)) * 2
    images = []
    g = grid(100, 80, config.scales)
    for i in range(n_images):
        objects = []
        for _ in range(1 + i % 2):
            c = int(rng.integers(len(SYNTHETIC_CLASSES)))
            x0, y0 = float(rng.uniform(0, 50)), float(rng.uniform(0, 40))
            objects.append(VocObject(SYNTHETIC_CLASSES[c], (x0, y0, x0 + 45, y0 + 38), False, False))
        labels = patch_labels(g.boxes, [o.box for o in objects], [SYNTHETIC_CLASSES.index(o.name) for o in objects],
                              len(SYNTHETIC_CLASSES)).numpy()
        feats = np.where((labels == DROPPED)[:, None], proto[:-1].mean(0), proto[labels])
        feats += rng.normal(size=feats.shape) * 0.5
        image_id = f"s{seed}_{i}"
        cache.add(image_id, torch.from_numpy(feats).float(), g.boxes, g.scale_index, (80, 100))
        images.append(VocImage(image_id, folder / f"{image_id}.jpg", 100, 80, objects))
    return cache, images


def worker_command(*args: str, nproc: int = 2) -> tuple[list[str], dict[str, str]]:
    """Command line and environment that run tests/distributed_worker.py with ``args`` on ``nproc`` local CPU
    ranks under torchrun (one thread each)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--monitor-interval=0.2", str(REPO / "tests" / "distributed_worker.py"), *args]
    return cmd, env


def run_worker(*args: str, cwd: Path, nproc: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs :func:`worker_command` to its end in ``cwd``, output captured."""
    cmd, env = worker_command(*args, nproc=nproc)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def normalised_photo(name: str, height: int, width: int, backbone: Backbone) -> torch.Tensor:
    """:func:`skimage_photo` resized (squashed) to ``height x width``, normalised for ``backbone``: (1, 3, H, W)."""
    image = Image.fromarray(skimage_photo(name)).convert("RGB").resize((width, height), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255
    return (x - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1)


def assert_weight_files_are_checked(build, tmp_path: Path, missing_name: str, missing_match: str,
                                    bad_state: dict[str, torch.Tensor], bad_match: str) -> None:
    """``build(weights_path=...)`` (a backbone factory) names a missing file (``missing_match``), refuses a file
    that is not a checkpoint and one holding ``bad_state`` (the problems it lists match ``bad_match``), and
    refuses ``weights_path`` with ``pretrained=False``."""
    with pytest.raises(FileNotFoundError, match=missing_match):
        build(weights_path=tmp_path / missing_name)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        build(weights_path=garbage)
    bad = tmp_path / "bad.pth"
    torch.save(bad_state, bad)
    with pytest.raises(ValueError, match=bad_match):
        build(weights_path=bad)
    # A training checkpoint is unwrapped (the same problems are found inside it), a whole pickled module and a
    # list are refused with what to save instead.
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": bad_state, "epoch": 3}, checkpoint)
    with pytest.raises(ValueError, match=bad_match):
        build(weights_path=checkpoint)
    module = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module)
    with pytest.raises(ValueError, match=r"pickled Python objects.*save model\.state_dict\(\)"):
        build(weights_path=module)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match=r"holds a list, expected a state dict"):
        build(weights_path=listed)
    with pytest.raises(ValueError, match="drop one"):
        build(pretrained=False, weights_path=bad)


# Compiles Triton kernels for Ampere and Hopper in a fresh process, without TRITON_INTERPRET: catches what the
# interpreter lets through (type mismatches between branches, unsupported ops) on a machine without a GPU. A
# script compiles each of its kernels for every target in TARGETS.
GPU_COMPILE_PRELUDE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
TARGETS = [GPUTarget("cuda", cc, 32) for cc in (80, 90)]
"""


def compile_for_gpus(script: str, cache_dir: Path) -> None:
    """Runs :data:`GPU_COMPILE_PRELUDE` + ``script`` in a fresh Python (Triton's cache in ``cache_dir``) and
    asserts that it ran to the end."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MIDLEVEL_FAST_TRITON_AUTOTUNE")}
    env["TRITON_CACHE_DIR"] = str(cache_dir)
    run = subprocess.run([sys.executable, "-c", GPU_COMPILE_PRELUDE + script + '\nprint("compiled")'], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "compiled" in run.stdout, run.stderr[-3000:]
