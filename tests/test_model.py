"""The patch classifier and how models are found (:mod:`midlevel_fast.model.classifier`): head files, the backbone's own
ImageNet classifier, the default."""
from __future__ import annotations

import pytest
import torch

from midlevel_fast import AdaptationHead, HeadInfo, PatchClassifier, load_model, save_head
from midlevel_fast.model.classifier import default_model, imagenet_classifier

from tests.helpers import random_alexnet


@pytest.fixture(scope="module")
def alexnet_backbone():
    return random_alexnet()


def test_imagenet_classifier_is_the_softmax_of_the_backbone_head(alexnet_backbone):
    model = imagenet_classifier(alexnet_backbone)
    assert model.class_names == alexnet_backbone.imagenet_classes and not model.info.background
    features = torch.randn(3, 4096, generator=torch.Generator().manual_seed(0))
    logits = alexnet_backbone.imagenet_head(features).double()
    want = logits.exp() / logits.exp().sum(1, keepdim=True)
    torch.testing.assert_close(model.probabilities(features), want.float())


def test_background_column_is_dropped_and_multilabel_heads_use_sigmoids(alexnet_backbone):
    head = AdaptationHead(4096, 3, layers=1).eval()
    features = torch.randn(2, 4096, generator=torch.Generator().manual_seed(1))
    logits = head(features).double()
    softmax = PatchClassifier(alexnet_backbone, head, HeadInfo("alexnet", ["a", "b"], layers=1))
    want = (logits.exp() / logits.exp().sum(1, keepdim=True))[:, :2]
    torch.testing.assert_close(softmax.probabilities(features), want.float())
    info = HeadInfo("alexnet", ["a", "b", "c"], background=False, layers=1, extra={"objective": "multilabel"})
    multilabel = PatchClassifier(alexnet_backbone, head, info)
    torch.testing.assert_close(multilabel.probabilities(features), (1 / (1 + (-logits).exp())).float())


def test_head_and_backbone_must_match(alexnet_backbone):
    with pytest.raises(ValueError, match="trained on backbone 'efficientnet_lite0', not 'alexnet'"):
        PatchClassifier(alexnet_backbone, AdaptationHead(4096, 2, layers=1), HeadInfo("efficientnet_lite0", ["a"]))


def test_load_model_from_a_head_file(tmp_path, alexnet_backbone):
    head = AdaptationHead(4096, 3, layers=2, hidden=8).eval()
    path = tmp_path / "alex.safetensors"
    save_head(path, head, HeadInfo("alexnet", ["cat", "dog"], layers=2, hidden=8))
    with pytest.warns(UserWarning, match="random weights"):
        model = load_model(path, pretrained=False)  # the backbone named in the file, built with these arguments
    assert model.backbone.name == "alexnet" and model.class_names == ["cat", "dog"] and not model.training
    features = torch.randn(2, 4096)
    torch.testing.assert_close(model.head(features), head(features))
    with pytest.raises(ValueError, match="trained on backbone"):
        load_model(path, backbone="efficientnet_lite0")


def test_imagenet_and_default_models():
    lite0 = load_model("imagenet")
    assert lite0.backbone.name == "efficientnet_lite0" and len(lite0.class_names) == 1000
    assert default_model() is default_model()  # built once per process


def test_a_misspelt_head_names_the_valid_choices():
    with pytest.raises(FileNotFoundError, match=r"did you mean 'imagenet'\?.*'imagenet' for the backbone's"):
        load_model("imagnet")
    with pytest.raises(FileNotFoundError, match="is not a file: give a head file") as err:
        load_model("no/such/head.safetensors")
    assert "did you mean" not in str(err.value)
