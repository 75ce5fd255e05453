"""Heat-map overlays and the one naming scheme of their files."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from midlevel_fast.io.overlay import map_file_name, write_maps


def test_map_file_names_are_flat_unique_and_visible():
    assert map_file_name("img.jpg", 1, "cat") == "img.jpg_1_cat.png"
    assert map_file_name("a/b/img.png", 2, "tiger cat") == "a__b__img.png_2_tiger_cat.png"
    assert map_file_name("demo:chelsea", 1, "Egyptian cat") == "demo_chelsea_1_Egyptian_cat.png"
    assert map_file_name(".hidden.jpg", 1, "cat") == "hidden.jpg_1_cat.png"
    assert map_file_name("x.jpg", 3, "!!!") == "x.jpg_3_class.png"
    assert map_file_name("x.jpg", 1, "c" * 50) == "x.jpg_1_" + "c" * 40 + ".png"
    # Same stem, other suffix or folder: other names.
    assert len({map_file_name(k, 1, "cat") for k in ("a.jpg", "a.png", "d/a.jpg", "e/a.jpg")}) == 4
    # Two classes of one name (ImageNet's two "crane") are told apart by their place.
    assert map_file_name("x.jpg", 1, "crane") != map_file_name("x.jpg", 2, "crane")


def test_write_maps_writes_one_captioned_overlay_per_map(tmp_path):
    image = np.full((30, 40, 3), 128, np.uint8)
    maps = torch.zeros(2, 30, 40)
    maps[0, :, :20] = 1.0
    names = write_maps(image, maps, [("cat", 0.5), ("dog", 0.25)], tmp_path / "maps", "sub/img.jpg")
    assert names == ["sub__img.jpg_1_cat.png", "sub__img.jpg_2_dog.png"]
    with Image.open(tmp_path / "maps" / names[0]) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape == (30, 40, 3)
    # The hot half is brighter than the cold half (below the caption's corner).
    assert pixels[20:, :20].mean() > pixels[20:, 20:].mean()
