"""AlexNet (:mod:`midlevel_fast.backbones.alexnet`): torchvision's layout and names, the convolutional FC6/FC7
window head against the classifier path, pool5 alignment, weight-file errors.

Relative error is ``max|a - b| / max|b|`` for activations and ``||a - b|| / ||b||`` for cells.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from midlevel_fast.backbones import AlexNet, alexnet

from tests.helpers import (IMAGENET_MEAN, IMAGENET_STD, assert_weight_files_are_checked, normalised_photo, rel_l2,
                           rel_max)

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
def random_alexnet() -> AlexNet:
    with pytest.warns(UserWarning, match="random weights"):
        return alexnet(pretrained=False)


def classifier_path(model: AlexNet, pool5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's path on ``(B, 256, 6, 6)`` pool5 cells: (FC7 after ReLU, FC8 logits)."""
    flat = torch.flatten(pool5, 1)
    fc7 = F.relu(model.classifier[4](F.relu(model.classifier[1](flat))))
    return fc7, model.classifier(flat)


def test_alexnet_normalises_with_torchvision_imagenet_statistics(random_alexnet: AlexNet) -> None:
    assert random_alexnet.mean == IMAGENET_MEAN and random_alexnet.std == IMAGENET_STD


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
        for step in (1, 2):
            dense = random_alexnet.window_head(cells, step)
            assert dense.shape[-2:] == (4 // step + 1, 3 // step + 1)
            for u, v in [(0, 0), (dense.shape[-2] - 1, dense.shape[-1] - 1), (1, 1)]:
                window = cells[:, :, u * step : u * step + 6, v * step : v * step + 6]
                expected, _ = classifier_path(random_alexnet, window)
                assert rel_max(dense[:, :, u, v], expected) <= 1e-4


def test_alexnet_weight_loading(tmp_path, random_alexnet: AlexNet) -> None:
    with pytest.raises(ValueError, match="pass weights_path"):
        alexnet()
    state = random_alexnet.state_dict()
    good = tmp_path / "good.pth"
    torch.save(state, good)
    loaded = alexnet(weights_path=good)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    bad_state = dict(state)
    bad_state["classifier.6.weight"] = bad_state["classifier.6.weight"][:10]
    del bad_state["features.3.bias"]
    assert_weight_files_are_checked(alexnet, tmp_path, "alexnet-owt-7be5be79.pth", "alexnet-owt-7be5be79.pth",
                                    bad_state, r"missing features\.3\.bias.*classifier\.6\.weight: shape \(10, 4096\)")


def test_alexnet_central_cells_align_with_crop(random_alexnet: AlexNet) -> None:
    """AlexNet's central pool5 cells are nearly untouched by the crop's padding, so they pin the alignment: the
    crop at ``32 * (u, v)`` matches to 1 %, a crop 4 px off does not."""
    x = normalised_photo("astronaut", 320, 320, random_alexnet)
    with torch.inference_mode():
        dense = random_alexnet.trunk(x)[0, :, 3:5, 3:5]

        def central(dy: int) -> torch.Tensor:
            return random_alexnet.trunk(x[:, :, 32 + dy : 256 + dy, 32 + dy : 256 + dy])[0, :, 2:4, 2:4]

        assert rel_l2(central(0), dense) <= 1e-2
        assert rel_l2(central(4), dense) >= 5e-2
