"""Helpers shared by the test modules (imported from here, never from another test module): image and box
generators, the tolerance table, the oracle with the public op's argument conventions, synthetic VOC trees."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st
from PIL import Image

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


W, H = 40, 30


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
