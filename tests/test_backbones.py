"""The backbone contract (:mod:`midlevel_fast.backbones`): the registry, the ImageNet class list, the shared
attributes and shapes, and dense windows against the 224 crops they stand for, on both backbones.

Relative error is ``||a - b|| / ||b||`` for feature vectors.
"""
from __future__ import annotations

import pytest
import torch

from midlevel_fast.backbones import AlexNet, Backbone, EfficientNetLite0, efficientnet_lite0, get_backbone
from midlevel_fast.backbones.base import imagenet_classes

from tests.helpers import normalised_photo, random_alexnet as build_random_alexnet, rel_l2


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0:
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def random_alexnet() -> AlexNet:
    return build_random_alexnet()


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


# Dense windows see the image where a 224 crop sees zero padding, so the vectors differ everywhere; measured
# on chelsea/astronaut/coffee at 320 x 320 (16 windows each): lite0 <= 0.50 (its 851 px receptive field makes
# every cell of a 224 crop a border cell), AlexNet with seeded random weights <= 0.26.
WINDOW_VS_CROP_TOLERANCE = {"lite0": 0.6, "random_alexnet": 0.35}


@pytest.mark.parametrize("factory", sorted(WINDOW_VS_CROP_TOLERANCE))
def test_dense_window_approximates_its_crop(factory: str, request) -> None:
    model: Backbone = request.getfixturevalue(factory)
    x = normalised_photo("chelsea", 320, 320, model)
    assert model.grid_offset(320, 320) == (0, 0)
    with torch.inference_mode():
        for step in (1, 2):
            dense = model.window_head(model.trunk(x), step)
            assert dense.shape[-2:] == ((320 - 224) // (32 * step) + 1,) * 2
            for u in range(dense.shape[-2]):
                for v in range(dense.shape[-1]):
                    y0, x0 = 32 * step * u, 32 * step * v
                    crop = model(x[:, :, y0 : y0 + 224, x0 : x0 + 224])[0]
                    assert rel_l2(dense[0, :, u, v], crop) <= WINDOW_VS_CROP_TOLERANCE[factory]
