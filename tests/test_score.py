"""score_image end to end on EfficientNet-Lite0 (ImageNet head) and on random-weight AlexNet."""
from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch

from midlevel_fast import grid, load_model, score_image
from midlevel_fast.backbones import alexnet
from midlevel_fast.scoring.dense import dense_length, dense_windows
from midlevel_fast.model import PatchClassifier, imagenet_classifier
from midlevel_fast.ops.crop_resize import crop_resize

from tests.helpers import load_rgb


@pytest.fixture(scope="module")
def lite0():
    return load_model("imagenet")


@pytest.fixture(scope="module")
def lite0_two_scales(lite0):
    info = dataclasses.replace(lite0.info, scales=[1.0, 2.0])
    return PatchClassifier(lite0.backbone, lite0.head, info).eval()


@pytest.fixture(scope="module")
def small_alexnet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bb = alexnet(pretrained=False)
    return imagenet_classifier(bb)


@pytest.fixture(scope="module")
def photo():
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    return skimage_data.chelsea()


def test_batched_equals_naive_on_the_same_boxes(lite0_two_scales, photo):
    naive = score_image(photo, lite0_two_scales, mode="naive")
    batched = score_image(photo, lite0_two_scales, mode="batched", batch_size=7)
    assert torch.equal(naive.boxes, batched.boxes)
    assert (naive.probs - batched.probs).abs().max().item() <= 1e-3
    assert (naive.scores - batched.scores).abs().max().item() <= 1e-3


def test_result_fields_and_top_class(lite0, photo):
    res = score_image(photo, lite0, return_maps=3)
    h, w = photo.shape[:2]
    assert res.image_size == (h, w) and res.mode == "dense" and res.k == 5
    m = len(res.boxes)
    assert res.probs.shape == (m, 1000) and res.scale_index.shape == (m,)
    assert res.scores.shape == (1000,)
    torch.testing.assert_close(res.scores, (res.probs.double() ** 5).mean(0).float())
    assert res.maps.shape == (3, h, w) and len(res.map_classes) == 3
    assert res.map_classes[0] == res.top(1)[0][0]
    assert any(cat in res.top(3)[0][0] for cat in ("tabby", "tiger cat", "Egyptian cat"))


def test_input_kinds_agree(lite0_two_scales, photo, tmp_path):
    from PIL import Image

    p = tmp_path / "cat.png"
    Image.fromarray(photo).save(p)
    ref = score_image(photo, lite0_two_scales, mode="batched").scores
    for src in (p, str(p), Image.fromarray(photo), torch.from_numpy(photo).permute(2, 0, 1)):
        torch.testing.assert_close(score_image(src, lite0_two_scales, mode="batched").scores, ref)


def test_bad_arguments(lite0_two_scales, photo, tmp_path):
    with pytest.raises(ValueError, match="mode"):
        score_image(photo, lite0_two_scales, mode="fast")
    with pytest.raises(ValueError, match="batch_size"):
        score_image(photo, lite0_two_scales, mode="batched", batch_size=0)
    with pytest.raises(ValueError, match="k must"):
        score_image(photo, lite0_two_scales, k=0)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ValueError, match="broken.jpg"):
        score_image(bad, lite0_two_scales)


def test_dense_windows_tile_the_image_edge_to_edge(small_alexnet):
    img = np.random.default_rng(0).integers(0, 256, (120, 333, 3), dtype=np.uint8)
    d = dense_windows(small_alexnet.backbone, img, scales=[1.0, 1.6, 4.0])
    assert d.features.shape == (len(d.boxes), 4096)
    for i in range(3):
        b = d.boxes[d.scale_index == i].double()
        assert b[:, 0].min() == pytest.approx(0, abs=1e-3) and b[:, 1].min() == pytest.approx(0, abs=1e-3)
        assert b[:, 2].max() == pytest.approx(333, abs=1e-2) and b[:, 3].max() == pytest.approx(120, abs=1e-2)
        side = 120 / [1.0, 1.6, 4.0][i]
        # Windows are squares of the grid's side, up to the per-axis rounding of the resized plane.
        assert ((b[:, 2] - b[:, 0]) / side - 1).abs().max() < 0.1
        assert ((b[:, 3] - b[:, 1]) / side - 1).abs().max() < 0.1


def test_dense_density_matches_the_paper(lite0):
    g = grid(500, 375)
    d = dense_windows(lite0.backbone, np.zeros((375, 500, 3), np.uint8))
    assert 0.9 * len(g.boxes) <= len(d.boxes) <= 1.8 * len(g.boxes)


@pytest.mark.parametrize("which,min_cos", [("alexnet", 0.95), ("lite0", 0.85)])
def test_dense_window_reproduces_its_crop_at_an_interior_aligned_position(which, min_cos, small_alexnet, lite0):
    """At scale factor 1 (patch side 224, plane 480 = 224 + 64·4), window (2, 2) covers pixels [128, 352)²; the
    per-patch vector of exactly that crop matches the dense one up to border context: cells near the crop's
    border see zero padding where the dense trunk sees the neighbours. That context matters much more for
    Lite0 (851-px receptive field, global average of all 7×7 cells) than for AlexNet, hence the two bounds."""
    model = small_alexnet if which == "alexnet" else lite0
    bb = model.backbone
    img = load_rgb_or_random(480)
    lam = 480 / 224
    assert dense_length(480, 480 / lam, 224, 64) == 480
    d = dense_windows(bb, img, scales=[lam])
    idx = 2 * 5 + 2
    torch.testing.assert_close(d.boxes[idx], torch.tensor([128.0, 128.0, 352.0, 352.0]), atol=1e-3, rtol=0)
    shifts = torch.tensor([[dx, dy, dx, dy] for dy in (-32, 0, 32) for dx in (-32, 0, 32)], dtype=torch.float32)
    crops = crop_resize(img, d.boxes[idx] + shifts, size=224, mean=bb.mean, std=bb.std)
    with torch.inference_mode():
        cos = torch.nn.functional.cosine_similarity(bb(crops), d.features[idx][None], dim=1)
    assert cos[4].item() > min_cos, f"{which}: cosine {cos[4].item():.3f} at the window's own box"
    if which == "alexnet":
        assert cos.argmax().item() == 4, f"a shifted crop matches better: {cos.tolist()}"


def load_rgb_or_random(size: int) -> np.ndarray:
    from tests.helpers import voc_root

    root = voc_root()
    if root is not None:
        from PIL import Image

        img = load_rgb(root / "JPEGImages" / "2008_000009.jpg")
        return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_precision_choices(lite0, photo):
    from midlevel_fast.scoring.score import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", "dense", cpu) is False and resolve_precision("bf16", "batched", cpu) is True
    assert resolve_precision("auto", "batched", cpu) is False and resolve_precision("auto", "naive", cpu) is False
    with pytest.raises(ValueError, match="precision"):
        score_image(photo, lite0, precision="fp8")
    fp32 = score_image(photo, lite0, precision="fp32")
    bf16 = score_image(photo, lite0, precision="bf16")
    assert torch.equal(fp32.boxes, bf16.boxes)
    assert fp32.top(1)[0][0] == bf16.top(1)[0][0]
    assert (fp32.probs - bf16.probs).abs().mean().item() < 5e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (or torch without CUDA)")
@pytest.mark.parametrize("mode", ["dense", "batched"])
def test_cuda_scores_and_maps_match_the_cpu(lite0_two_scales, photo, mode):
    model = copy.deepcopy(lite0_two_scales)
    cpu = score_image(photo, model, mode=mode, return_maps=3, precision="fp32", device="cpu")
    gpu = score_image(photo, model, mode=mode, return_maps=3, precision="fp32", device="cuda")
    assert torch.equal(cpu.boxes, gpu.boxes) and cpu.map_classes == gpu.map_classes
    assert gpu.maps.device.type == "cpu" and gpu.maps.shape == cpu.maps.shape
    # cuDNN may run the convolutions in TF32: agreement to a few 1e-3, not to float32 rounding.
    torch.testing.assert_close(gpu.probs, cpu.probs, atol=5e-3, rtol=0)
    torch.testing.assert_close(gpu.maps, cpu.maps, atol=5e-3, rtol=0)
    torch.testing.assert_close(gpu.scores, cpu.scores, atol=5e-3, rtol=0.05)
