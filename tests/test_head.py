"""The adaptation head (:mod:`midlevel_fast.model.head`): dense and per-patch use agree, head files round-trip and
refuse what they cannot read, probabilities by hand."""
from __future__ import annotations

import math

import pytest
import torch

from midlevel_fast import AdaptationHead, HeadInfo, load_head, save_head
from midlevel_fast.model.head import class_probabilities


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_head_per_patch_equals_dense(layers):
    torch.manual_seed(0)
    head = AdaptationHead(32, 5, layers=layers, hidden=16).eval()
    x = torch.randn(2, 32, 3, 4)
    dense = head(x)
    per_patch = head(x.permute(0, 2, 3, 1).reshape(-1, 32)).reshape(2, 3, 4, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(dense, per_patch)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    head = AdaptationHead(32, 3, layers=2, hidden=16, dropout=0.25).eval()
    info = HeadInfo(backbone="efficientnet_lite0", class_names=["cat", "dog"], k=4.0, scales=[1.0, 2.0],
                    grid_step=0.25, layers=2, hidden=16, extra={"objective": "multilabel"})
    path = tmp_path / "sub" / "h.safetensors"
    save_head(path, head, info)
    assert [p.name for p in path.parent.iterdir()] == ["h.safetensors"]  # no temporary left behind
    loaded, info2 = load_head(path)
    assert info2 == info and loaded.dropout == 0.25 and not loaded.training
    x = torch.randn(4, 32)
    torch.testing.assert_close(loaded(x), head(x))


def test_half_precision_files_load_as_float32(tmp_path):
    head = AdaptationHead(8, 2, layers=1)
    info = HeadInfo(backbone="alexnet", class_names=["a"], layers=1, hidden=16)
    save_head(tmp_path / "h.safetensors", head, info, dtype=torch.float16)
    loaded, _ = load_head(tmp_path / "h.safetensors")
    weight = loaded.state_dict()["net.0.weight"]
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, head.state_dict()["net.0.weight"].half().float())


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_head(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_head(bad)


def test_bad_head_config(tmp_path):
    with pytest.raises(ValueError, match="layers"):
        AdaptationHead(8, 2, layers=4)
    info = HeadInfo(backbone="alexnet", class_names=["a", "b"], layers=1)  # 3 outputs with the background
    with pytest.raises(ValueError, match="does not match"):
        save_head(tmp_path / "h.safetensors", AdaptationHead(8, 2, layers=1), info)


def test_class_probabilities_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    # Softmax over both outputs, background (the last) dropped: e^0 / (e^0 + 3) = 1/4.
    torch.testing.assert_close(class_probabilities(logits, "softmax", 1), torch.tensor([[0.25]]))
    # Per-output sigmoids: 1/2 and 3/4.
    torch.testing.assert_close(class_probabilities(logits, "multilabel", 2), torch.tensor([[0.5, 0.75]]))
    with pytest.raises(ValueError, match="objective"):
        class_probabilities(logits, "ranking", 1)


def test_box_regression_round_trips_through_the_head_file(tmp_path):
    from midlevel_fast.model.box_regression import BoxRegression
    torch.manual_seed(0)
    head = AdaptationHead(6, 3, layers=1).eval()
    reg = BoxRegression(torch.randn(2, 4, 6), torch.randn(2, 4), {"ridge": 0.01, "rows": [30, 40]})
    info = HeadInfo(backbone="toy", class_names=["cat", "dog"], layers=1, hidden=16, box_regression=reg)
    save_head(tmp_path / "h.safetensors", head, info, dtype=torch.float16)
    _, back = load_head(tmp_path / "h.safetensors")
    got = back.box_regression
    assert got.description == reg.description
    # Stored in the weights' dtype (float16 here), read back as float32.
    assert got.weight.dtype == torch.float32
    assert torch.equal(got.weight, reg.weight.half().float()) and torch.equal(got.bias, reg.bias.half().float())
    save_head(tmp_path / "f32.safetensors", head, info)
    assert torch.equal(load_head(tmp_path / "f32.safetensors")[1].box_regression.weight, reg.weight)
    bad = HeadInfo(backbone="toy", class_names=["cat"], layers=1, hidden=16, box_regression=reg)
    with pytest.raises(ValueError, match="box regression is for 2 classes"):
        save_head(tmp_path / "bad.safetensors", AdaptationHead(6, 2, layers=1), bad)
