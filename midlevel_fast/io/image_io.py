"""Turning whatever a user passes as an image into RGB uint8 HWC, or a clear error naming the input.

Accepted:
    * a path (``str`` or ``os.PathLike``) to any file Pillow decodes;
    * a ``PIL.Image.Image``;
    * a numpy array, HWC (or HW) as Pillow and OpenCV-after-BGR2RGB give them: uint8, or uint16 (16-bit,
      scaled by 1/257);
    * a torch tensor, CHW (or HW) as ``torchvision.io.read_image`` gives them: uint8, or float in [0, 1].

EXIF orientation is applied. Grey, palette, RGBA/LA (composited on white), CMYK, YCbCr and 16-bit images are
converted to 8-bit RGB; 1- and 4-channel arrays likewise.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own default of PIL.Image.MAX_IMAGE_PIXELS, our limit's base when a user switches Pillow's guard off.
_DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def max_pixels() -> int:
    """The most pixels an image may have, one limit for files and PIL images (an array is already in memory):
    Pillow's decompression-bomb error threshold, ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (178,956,970 by default). It is
    read at each call so that raising Pillow's limit raises ours; with Pillow's guard switched off (``None``) the
    default threshold still holds, since decoding past it is what risks the machine's memory."""
    return 2 * (Image.MAX_IMAGE_PIXELS or _DEFAULT_MAX_IMAGE_PIXELS)


def _check_size(width: int, height: int, what: str) -> None:
    # Checked on the declared size, before decoding, so a small file declaring a huge image allocates nothing.
    if width * height > max_pixels():
        raise ValueError(f"{what}: {width}x{height} ({width * height} pixels) is more than the limit of "
                         f"{max_pixels():,} pixels (2 x PIL.Image.MAX_IMAGE_PIXELS); if you trust the file, raise "
                         f"PIL.Image.MAX_IMAGE_PIXELS")


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"image file {os.fspath(image)!r}"
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return f"{type(image).__name__} of shape {tuple(image.shape)} and dtype {image.dtype}"
    return f"image of type {type(image).__name__}"


def _from_pil(im: Image.Image, what: str, owned: bool) -> np.ndarray:
    """``im`` as RGB uint8 HWC. ``owned``: ``im`` was opened here and may be changed in place, which keeps the
    largest accepted image at two copies (the decoded one and the array) instead of four."""
    if owned:
        ImageOps.exif_transpose(im, in_place=True)
    else:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / hi)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode == "F":
        raise ValueError(f"{what}: 32-bit float images (mode F) have no fixed range; convert them to 8-bit first")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def _from_array(arr: np.ndarray, what: str, channels_first: bool) -> np.ndarray:
    if arr.ndim == 3 and channels_first:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        layout = "CHW" if channels_first else "HWC"
        raise ValueError(f"{what}: expected {layout} (or HW) with 1, 3 or 4 channels")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{what}: the image is empty")
    if arr.dtype == np.uint16:
        arr = np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif arr.dtype in (np.float32, np.float64) and channels_first:
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{what}: float images must be finite and within [0, 1]")
        arr = np.rint(arr * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"{what}: dtype must be uint8 or uint16" + (" or float in [0, 1]" if channels_first else ""))
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = np.rint(arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def load_image(image: Any) -> np.ndarray:
    """``image`` (see the module docstring) as a contiguous RGB uint8 ``(H, W, 3)`` array.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the input for anything unreadable,
    corrupt, truncated or of an unsupported type or layout.
    """
    what = _describe(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_dir():
            raise IsADirectoryError(f"{what} is a directory, not an image file (score-dir scores a directory)")
        if not path.is_file():
            raise FileNotFoundError(f"{what}: no such file")
        try:
            with Image.open(path) as im:
                _check_size(im.width, im.height, what)
                im.load()
                return _from_pil(im, what, owned=True)
        except Image.DecompressionBombError as e:  # Pillow's own guard, checked on the declared size at open
            raise ValueError(
                f"{what}: {e.args[0]} Pillow refuses images above 2 x PIL.Image.MAX_IMAGE_PIXELS "
                f"({max_pixels():,} pixels now, midlevel_fast's limit too); if you trust the file, raise "
                f"PIL.Image.MAX_IMAGE_PIXELS") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"{what}: cannot decode it ({e}); is it a complete image file?") from None
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, what)
        try:
            image.load()
        except OSError as e:
            raise ValueError(f"{what}: cannot decode it ({e})") from None
        return _from_pil(image, what, owned=False)
    if isinstance(image, np.ndarray):
        return _from_array(image, what, channels_first=False)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
            t = t.float()
        return _from_array(t.numpy(), what, channels_first=True)
    raise ValueError(f"{what}: pass a path, a PIL image, a numpy HWC array or a torch CHW tensor")
