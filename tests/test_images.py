"""score_images (:mod:`midlevel_fast.scoring.images`): batched across images, the results are score_image's image
by image (the shipped Lite0 model on photos of equal and of different sizes, fp32 and bf16, with maps; a tiny
convolutional backbone for many random sizes, chunkings and batch budgets), and a bad image among good ones is
named in the error."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import midlevel_fast
from midlevel_fast import load_model, score_image, score_images
from midlevel_fast.backbones.base import Backbone
from midlevel_fast.model.head import HeadInfo
from midlevel_fast.model.classifier import PatchClassifier
from midlevel_fast.ops.crop_resize import IMAGENET_MEAN, IMAGENET_STD
from midlevel_fast.scoring import images as images_module
from midlevel_fast.features.dense import DensePlan, dense_plane_sizes
from midlevel_fast.scoring.images import _same_size_batches
from midlevel_fast.scoring.result import ScoreResult
from tests.helpers import random_image, skimage_photo

# Batched against per-image results, per trunk precision: the largest |difference| of the window probabilities
# and of the maps, and the largest relative difference of the image scores. The batched convolutions may round
# differently from one-plane ones (oneDNN picks its kernels by batch size); on the AVX512-BF16 CI machine both
# precisions came out bit-identical, on an AMX machine bf16 did not: a trunk output within ~1e-7 of the midpoint of
# two bf16 numbers rounded up at one batch size and down at the other, which moved the tiny backbone's window
# probabilities by up to 2.3e-4 (3 of 31 seeds). bf16 leaves room for one bf16 rounding step (2^-8) moved through
# the trunk.
TOLERANCES = {
    "fp32": dict(probs=1e-5, maps=1e-5, scores=1e-4),
    "bf16": dict(probs=2e-2, maps=1e-2, scores=5e-2),
}


class TinyBackbone(Backbone):
    """A seeded one-layer stand-in for the trunk with Lite0's geometry (32 px cells, 7×7-cell windows): a
    32×32 stride-32 convolution, the window head a mean over each window's cells. Fast enough for many examples."""

    name = "tiny"
    cell_size = 32
    window = 7
    feature_dim = cell_dim = 6
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self) -> None:
        super().__init__()
        # Every parameter seeded (the biases too): torch seeds its global generator differently in each process.
        gen = torch.Generator().manual_seed(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, self.cell_dim, self.cell_size, stride=self.cell_size)
            self.imagenet_head = nn.Linear(self.feature_dim, 1000)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.02)
        self._finalize()

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))

    def window_head(self, cells: torch.Tensor, window_step: int = 1) -> torch.Tensor:
        return F.avg_pool2d(cells, self.window, stride=window_step)


@pytest.fixture(scope="module")
def tiny() -> PatchClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = nn.Linear(TinyBackbone.feature_dim, 4)  # its bias seeded, as the backbone's
    with torch.no_grad():
        head.weight.copy_(torch.linspace(-3, 3, head.weight.numel()).reshape(head.weight.shape))
    info = HeadInfo(backbone="tiny", class_names=["a", "b", "c"], background=True, layers=1, hidden=0,
                    scales=[1.0, 2.0, 4.0])
    return PatchClassifier(TinyBackbone(), head, info).eval()


@pytest.fixture(scope="module")
def voc_two_scales() -> PatchClassifier:
    """The shipped model (VOC head with calibration and layout box regression) on two scales, for speed."""
    model = load_model()
    return PatchClassifier(model.backbone, model.head, dataclasses.replace(model.info, scales=[1.0, 2.0])).eval()


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Chelsea (451×300), mirrored (the same size: planes stacked at every scale), cropped to 420×280 (another
    size with the same planes: stacked across sizes) and to 250×300 (planes of its own)."""
    cat = skimage_photo("chelsea")
    return [cat, np.ascontiguousarray(cat[:, ::-1]), np.ascontiguousarray(cat[10:290, 20:440]),
            np.ascontiguousarray(cat[:, 100:350])]


def assert_same_result(got: ScoreResult, want: ScoreResult, precision: str = "fp32") -> None:
    """``got`` (score_images) is ``want`` (score_image) within :data:`TOLERANCES`; geometry exactly."""
    tol = TOLERANCES[precision]
    assert got.image_size == want.image_size and got.mode == want.mode and got.k == want.k
    assert torch.equal(got.windows, want.windows) and torch.equal(got.scale_index, want.scale_index)
    assert got.class_names == want.class_names
    assert (got.probs - want.probs).abs().max().item() <= tol["probs"]
    rel = (got.scores - want.scores).abs() / want.scores.abs().clamp_min(1e-30)
    assert rel.max().item() <= tol["scores"]
    assert (want.presence is None) == (got.presence is None)
    if want.presence is not None:
        assert (got.presence - want.presence).abs().max().item() <= tol["probs"]
    assert (want.maps is None) == (got.maps is None)
    if want.maps is not None:
        assert got.maps.shape == want.maps.shape
        assert (got.maps - want.maps).abs().max().item() <= tol["maps"]
    if precision == "fp32":  # in bf16 a near-tie may go either way: the ranking-dependent fields only in fp32
        assert got.map_classes == want.map_classes and got.points.keys() == want.points.keys()
        assert all(got.points[c] == pytest.approx(want.points[c], abs=1e-3) for c in want.points)
        assert [d.label for d in got.detections] == [d.label for d in want.detections]
        for a, b in zip(got.detections, want.detections):
            assert a.score == pytest.approx(b.score, abs=1e-5) and a.box == pytest.approx(b.box, abs=1e-2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batched_across_images_equals_score_image(voc_two_scales, photos, precision):
    got = score_images(photos, voc_two_scales, precision=precision, return_maps=2, batch_images=3)
    assert len(got) == len(photos)
    for image, res in zip(photos, got):
        assert_same_result(res, score_image(image, voc_two_scales, precision=precision, return_maps=2), precision)
        assert res.seconds > 0


def test_input_kinds_and_the_batched_mode(tiny, tmp_path):
    img = random_image(90, 130, 3, seed=1)
    path = tmp_path / "img.png"
    Image.fromarray(img).save(path)
    inputs = [path, str(path), Image.fromarray(img), img, torch.from_numpy(img).permute(2, 0, 1)]
    # float32, which the fp32 tolerances are for: "auto" is bf16 on a CPU with native bf16, where batched planes
    # may round differently (TOLERANCES); bf16 is compared with its own tolerances above.
    want = score_image(img, tiny, return_maps=True, precision="fp32")
    for res in score_images(inputs, tiny, return_maps=True, batch_images=2, precision="fp32"):
        assert_same_result(res, want)
    for mode in ("batched", "naive"):  # image by image through score_image's path
        want = score_image(img, tiny, mode=mode, return_maps=1)
        for res in score_images(inputs[:2], tiny, mode=mode, return_maps=1, workers=0):
            assert_same_result(res, want)


@settings(max_examples=25)
@given(sizes=st.lists(st.sampled_from([(28, 28), (40, 90), (90, 40), (64, 100), (66, 100), (120, 57)]),
                      min_size=1, max_size=5),
       batch_images=st.integers(1, 4), workers=st.integers(0, 2), budget=st.sampled_from([1, 400_000, 12_000_000]),
       window_step=st.sampled_from([None, 1]))
def test_any_sizes_chunks_and_budgets_equal_score_image(tiny, sizes, batch_images, workers, budget, window_step):
    # Budget 1: one plane per trunk call; 400,000 px: some groups split; 12 M: every group whole.
    images = [random_image(h, w, 3, seed=i) for i, (h, w) in enumerate(sizes)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images_module, "MAX_BATCH_PIXELS", budget)
        got = score_images(images, tiny, batch_images=batch_images, workers=workers, window_step=window_step,
                           return_maps=2, precision="fp32")
    for image, res in zip(images, got):
        assert_same_result(res, score_image(image, tiny, window_step=window_step, return_maps=2, precision="fp32"))


@settings(max_examples=40)
@given(sizes=st.lists(st.tuples(st.integers(28, 400), st.integers(28, 400)), min_size=1, max_size=12),
       budget=st.integers(1, 3_000_000))
def test_trunk_calls_cover_every_plane_once_within_the_budget(sizes, budget):
    plans = [DensePlan(h, w, 2, 64, 224, dense_plane_sizes(w, h, [1.0, 1.6, 3.2], 224, 64)) for h, w in sizes]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images_module, "MAX_BATCH_PIXELS", budget)
        batches = _same_size_batches(plans)
    members = [m for batch in batches for m in batch]
    assert sorted(members) == [(j, s) for j in range(len(plans)) for s in range(3)]
    for batch in batches:
        (hr, wr), = {plans[j].planes[s] for j, s in batch}
        assert len(batch) == 1 or len(batch) * hr * wr <= budget
    # Same-size planes go together unless the budget splits them: as few calls as the budget allows.
    sizes_count: dict[tuple[int, int], int] = {}
    for plan in plans:
        for hw in plan.planes:
            sizes_count[hw] = sizes_count.get(hw, 0) + 1
    assert len(batches) == sum(-(-n // max(1, budget // (h * w))) for (h, w), n in sizes_count.items())


def test_a_bad_image_among_good_ones_is_named(tiny, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(random_image(60, 80, 3)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ValueError, match=r"images\[1\]: image file '.*broken\.jpg': cannot decode"):
        score_images([good, broken, good], tiny)
    with pytest.raises(FileNotFoundError, match=r"images\[2\]: image file '.*missing\.png': no such file"):
        score_images([good, good, tmp_path / "missing.png"], tiny, batch_images=2)
    with pytest.raises(ValueError, match=r"images\[1\]: image is 20x20 pixels, too small to score"):
        score_images([good, np.zeros((20, 20, 3), np.uint8)], tiny, workers=0)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(small)
    with pytest.raises(ValueError, match=r"images\[0\]: image file '.*small\.png' is 20x20 pixels, too small"):
        score_images([small, good], tiny)
    long = tmp_path / "long.png"
    Image.fromarray(np.zeros((28, 3000, 3), np.uint8)).save(long)
    with pytest.raises(ValueError, match=r"images\[1\] \('.*long\.png'\): image 3000x28 is too elongated for mode "
                                         r"'dense'.*mode='batched'"):
        score_images([good, long], tiny)


def test_bad_arguments(tiny, tmp_path):
    img = random_image(60, 80, 3)
    with pytest.raises(ValueError, match="no images"):
        score_images([], tiny)
    with pytest.raises(TypeError, match="use score_image for a single image"):
        score_images(img, tiny)
    for kwargs, match in (({"batch_images": 0}, "batch_images"), ({"workers": -1}, "workers"),
                          ({"window_step": 0}, "window_step"), ({"mode": "fast"}, "mode"),
                          ({"precision": "fp8"}, "precision"), ({"k": 0}, "k must")):
        with pytest.raises(ValueError, match=match):
            score_images([img], tiny, **kwargs)


def test_exported():
    assert midlevel_fast.score_images is score_images and "score_images" in midlevel_fast.__all__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (or torch without CUDA)")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_batched_across_images_equals_score_image(voc_two_scales, photos, precision):
    """On a GPU: pinned uploads, planes resized there, same-size planes stacked; run by benchmarks/gpu_check.sh."""
    model = copy.deepcopy(voc_two_scales)
    got = score_images(photos, model, precision=precision, return_maps=2, batch_images=4, device="cuda")
    for image, res in zip(photos, got):
        want = score_image(image, model, precision=precision, return_maps=2, device="cuda")
        assert_same_result(res, want, precision)
        assert res.maps.device.type == "cpu"
