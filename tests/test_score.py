"""score_image end to end on EfficientNet-Lite0 (ImageNet head): the modes against each other, the scores and maps
against the oracle, the result's fields, inputs, arguments and precision."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from PIL import Image

from midlevel_fast import grid, load_model, score_image
from midlevel_fast.model.classifier import PatchClassifier
from midlevel_fast.runtime.precision import resolve_precision
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.scoring.options import MODES
from tests.oracle.aggregate import output_maps_reference, power_mean_reference

from tests.helpers import skimage_photo


@pytest.fixture(scope="module")
def lite0():
    return load_model("imagenet")


@pytest.fixture(scope="module")
def lite0_two_scales(lite0):
    info = dataclasses.replace(lite0.info, scales=[1.0, 2.0])
    return PatchClassifier(lite0.backbone, lite0.head, info).eval()


@pytest.fixture(scope="module")
def photo():
    return skimage_photo("chelsea")


def test_batched_equals_naive_on_the_same_boxes(lite0_two_scales, photo):
    naive = score_image(photo, lite0_two_scales, mode="naive")
    batched = score_image(photo, lite0_two_scales, mode="batched", batch_size=7, precision="fp32")
    assert torch.equal(naive.windows, batched.windows)
    assert (naive.probs - batched.probs).abs().max().item() <= 1e-3
    assert (naive.scores - batched.scores).abs().max().item() <= 1e-3


def test_result_fields_and_top_class(lite0, photo):
    res = score_image(photo, lite0, return_maps=3)
    h, w = photo.shape[:2]
    assert res.image_size == (h, w) and res.mode == "dense" and res.k == 5 and res.seconds > 0
    m = len(res.windows)
    assert res.probs.shape == (m, 1000) and res.scale_index.shape == (m,) and res.scores.shape == (1000,)
    torch.testing.assert_close(res.scores, power_mean_reference(res.probs, 5).float(), atol=1e-7, rtol=1e-5)
    assert res.maps.shape == (3, h, w) and len(res.map_classes) == 3
    assert res.map_classes[0] == res.top(1)[0][0]
    assert any(cat in res.top(3)[0][0] for cat in ("tabby", "tiger cat", "Egyptian cat"))
    # Complete when returned: nothing is filled in later, and nothing can be.
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.seconds = 0.0


def test_scores_and_maps_equal_the_oracle_on_the_patches(lite0_two_scales, photo):
    """The image score is the power mean of the patch probabilities, the maps their per-pixel mean over the
    covering patches, for the ``return_maps`` best classes; ``k`` overrides the model's exponent."""
    h, w = photo.shape[:2]
    res = score_image(photo, lite0_two_scales, mode="batched", k=2.5, return_maps=2)
    g = grid(w, h, [1.0, 2.0])
    assert torch.equal(res.windows, g.boxes) and torch.equal(res.scale_index, g.scale_index) and res.k == 2.5
    torch.testing.assert_close(res.scores, power_mean_reference(res.probs, 2.5).float(), atol=1e-7, rtol=1e-5)
    best = torch.argsort(power_mean_reference(res.probs, 2.5), descending=True)[:2]
    assert res.map_classes == [lite0_two_scales.class_names[i] for i in best.tolist()]
    torch.testing.assert_close(res.maps, output_maps_reference(res.windows, res.probs[:, best], h, w), atol=1e-5,
                               rtol=0)


def test_top_by_hand():
    res = ScoreResult(["a", "b", "c"], torch.tensor([0.2, 0.7, 0.1]), torch.zeros(0, 4), torch.zeros(0, 3),
                      torch.zeros(0, dtype=torch.int64), (1, 1), "dense", 5.0)
    assert [name for name, _ in res.top(2)] == ["b", "a"]
    assert res.top(10) == [("b", pytest.approx(0.7)), ("a", pytest.approx(0.2)), ("c", pytest.approx(0.1))]


def test_input_kinds_agree(lite0_two_scales, photo, tmp_path):
    p = tmp_path / "cat.png"
    Image.fromarray(photo).save(p)
    ref = score_image(photo, lite0_two_scales, mode="batched").scores
    for src in (p, str(p), Image.fromarray(photo), torch.from_numpy(photo).permute(2, 0, 1)):
        torch.testing.assert_close(score_image(src, lite0_two_scales, mode="batched").scores, ref)


def test_bad_arguments(lite0_two_scales, photo, tmp_path):
    assert MODES == ("dense", "batched", "naive")
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


def test_precision_choices(lite0, photo):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", "dense", cpu) == "fp32" and resolve_precision("bf16", "batched", cpu) == "bf16"
    # Dense and batched follow the same rule for this CPU (tests/test_precision.py); the naive loop stays fp32.
    assert resolve_precision("auto", "batched", cpu) == resolve_precision("auto", "dense", cpu)
    assert resolve_precision("auto", "naive", cpu) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        score_image(photo, lite0, precision="fp8")
    fp32 = score_image(photo, lite0, precision="fp32")
    bf16 = score_image(photo, lite0, precision="bf16")
    assert torch.equal(fp32.windows, bf16.windows)
    assert fp32.top(1)[0][0] == bf16.top(1)[0][0]
    assert (fp32.probs - bf16.probs).abs().mean().item() < 5e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (or torch without CUDA)")
@pytest.mark.parametrize("mode", ["dense", "batched"])
def test_cuda_scores_and_maps_match_the_cpu(lite0_two_scales, photo, mode):
    model = copy.deepcopy(lite0_two_scales)
    cpu = score_image(photo, model, mode=mode, return_maps=3, precision="fp32", device="cpu")
    gpu = score_image(photo, model, mode=mode, return_maps=3, precision="fp32", device="cuda")
    assert torch.equal(cpu.windows, gpu.windows) and cpu.map_classes == gpu.map_classes
    assert gpu.maps.device.type == "cpu" and gpu.maps.shape == cpu.maps.shape
    # cuDNN may run the convolutions in TF32: agreement to a few 1e-3, not to float32 rounding.
    torch.testing.assert_close(gpu.probs, cpu.probs, atol=5e-3, rtol=0)
    torch.testing.assert_close(gpu.maps, cpu.maps, atol=5e-3, rtol=0)
    torch.testing.assert_close(gpu.scores, cpu.scores, atol=5e-3, rtol=0.05)
