"""Image loading (:mod:`midlevel_fast.io.image_io`): every accepted kind of input gives the same RGB uint8 array;
modes, bit depths, alpha and EXIF orientation are converted; bad inputs raise errors that name them."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast import load_image
from midlevel_fast.io.image_io import max_pixels


def _rgb(h=12, w=16):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(tmp_path, im: Image.Image, name: str, **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


def test_path_pil_numpy_tensor_agree(tmp_path):
    arr = _rgb()
    p = _write(tmp_path, Image.fromarray(arr), "a.png")
    for src in (p, str(p), Image.fromarray(arr), arr, torch.from_numpy(arr).permute(2, 0, 1)):
        np.testing.assert_array_equal(load_image(src), arr)
    np.testing.assert_array_equal(load_image(torch.from_numpy(arr).permute(2, 0, 1).float() / 255), arr)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "YCbCr", "1"])
def test_modes_become_rgb(tmp_path, mode):
    base = Image.fromarray(_rgb())
    sixteen_bit = Image.fromarray((np.arange(192).reshape(12, 16) * 300).astype(np.uint16))
    im = base.convert(mode) if mode != "I;16" else sixteen_bit
    fmt = "TIFF" if mode in ("CMYK", "I;16", "YCbCr") else "PNG"
    if mode == "YCbCr":
        fmt = "JPEG"
    p = _write(tmp_path, im, f"x.{fmt.lower()}", format=fmt)
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3)


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.full((4, 4), 65535, np.uint16)
    assert load_image(arr).max() == 255
    assert load_image(Image.fromarray(np.full((4, 4), 32768, np.uint16))).max() == 128


def test_rgba_composited_on_white():
    arr = np.zeros((2, 2, 4), np.uint8)
    np.testing.assert_array_equal(load_image(arr), np.full((2, 2, 3), 255, np.uint8))


def test_exif_orientation_applied(tmp_path):
    arr = _rgb(10, 20)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    p = tmp_path / "o.jpg"
    im.save(p, exif=exif, quality=95)
    assert load_image(p).shape == (20, 10, 3)
    # A PIL image the caller passes is rotated in a copy: the caller's image keeps its size and its tag.
    with Image.open(p) as opened:
        assert load_image(opened).shape == (20, 10, 3)
        assert opened.size == (20, 10) and opened.getexif().get(0x0112) == 6


def test_truncated_and_corrupt_files_name_the_input(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, format="JPEG")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    for p in (trunc, junk):
        with pytest.raises(ValueError, match=p.name):
            load_image(p)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8),
    torch.full((3, 4, 4), 2.0), torch.zeros(2, 3, 4, 4, dtype=torch.uint8), 42, ["a"],
])
def test_bad_inputs(bad):
    with pytest.raises(ValueError):
        load_image(bad)


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory, not an image file"):
        load_image(tmp_path)


def test_a_decompression_bomb_gets_our_message(tmp_path):
    """A tiny PNG whose header declares 60000 x 60000 pixels: Pillow's bomb guard, reported with the size, the
    limit and how to raise it, not as an incomplete file."""
    path = png_declaring(tmp_path / "bomb.png", 60000, 60000)
    with pytest.raises(ValueError) as info:
        load_image(path)
    message = str(info.value)
    assert "bomb.png" in message and "3600000000 pixels" in message and "MAX_IMAGE_PIXELS" in message
    assert "complete image file" not in message


def png_declaring(path, width: int, height: int):
    """A 1x1 PNG whose header declares ``width`` x ``height`` pixels (CRC fixed): tiny data, huge declared size."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def test_a_huge_declared_size_is_refused_before_decoding(tmp_path, monkeypatch):
    """With Pillow's guard switched off, the header's size is still checked against our limit before any pixel is
    decoded (decoding would allocate 10.8 GB here): before the fix the limit was checked after ``im.load()``."""
    path = png_declaring(tmp_path / "huge.png", 60000, 60000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    def no_decoding(self):
        raise AssertionError("decoded a 60000x60000 image before checking its size")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ValueError) as info:
        load_image(path)
    assert "huge.png" in str(info.value) and "60000x60000 (3600000000 pixels)" in str(info.value)
    assert f"{max_pixels():,}" in str(info.value)


def test_our_limit_is_pillows_bomb_threshold(monkeypatch):
    """One limit, stated once: Pillow's error threshold, following it when a user raises it."""
    assert max_pixels() == 2 * Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**9)
    assert max_pixels() == 2 * 10**9
