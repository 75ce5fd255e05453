"""Prepared backbone copies against the backbones' own (unfused float32) forward: float32 to rounding,
bfloat16 within the tolerance table, on Lite0 (ImageNet weights) and AlexNet (random weights) at odd sizes;
the cache is reused and remade when the weights change."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast.backbones import efficientnet_lite0
from midlevel_fast.backbones.efficientnet_lite import _MBConv
from midlevel_fast.backbones.same_conv import SameConv2d
from midlevel_fast.backbones.layout import WindowLayout
from midlevel_fast.backbones.prepared import copy_dtype, prepared
from midlevel_fast.features.dense import dense_windows
from tests.helpers import random_alexnet, rel_l2

# (backbone, precision) -> max relative L2 error of the window features against the module's float32.
TOLERANCE = {("lite0", "fp32"): 1e-5, ("lite0", "bf16"): 6e-2, ("alexnet", "fp32"): 1e-5,
             ("alexnet", "bf16"): 3e-2}
# Odd and even sides: Lite0's stride-2 "SAME" padding differs between them.
SIZES = [(224, 224), (257, 321), (288, 235)]


@pytest.fixture(scope="module")
def backbones():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {"lite0": efficientnet_lite0(), "alexnet": random_alexnet()}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("key", list(TOLERANCE))
def test_prepared_matches_module(backbones, key, size):
    name, precision = key
    bb = backbones[name]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = bb.window_head(bb.trunk(x), 2)
        net = prepared(bb, precision)
        got = net.window_head(net.trunk(x.to(copy_dtype(net))), 2).float()
    assert got.shape == want.shape
    assert rel_l2(got, want) < TOLERANCE[key]
    assert net is not bb and net.fused and not bb.fused  # the original stays the unfused reference


def test_prepared_is_cached_and_follows_weight_changes(backbones):
    bb = backbones["lite0"]
    first = prepared(bb, "bf16")
    assert prepared(bb, "bf16") is first and copy_dtype(first) == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in first.parameters())
    conv = first._blocks[3]._expand_conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    # A layout wrapper is rebuilt per call but shares the inner backbone's copy.
    assert prepared(WindowLayout(bb), "bf16").inner is first
    with torch.no_grad():
        bb._conv_head.bias.add_(0.0)  # an in-place update (as load_top does) bumps the version
    second = prepared(bb, "bf16")
    assert second is not first
    with torch.no_grad():
        bb._conv_head.bias.sub_(0.0)
    with pytest.raises(ValueError, match="precision must be one of"):
        prepared(bb, "fp8")


def test_prepared_backbone_made_under_inference_mode():
    """Parameters created under inference_mode have no version counter; the copy is still made, cached, and
    remade when such a parameter is replaced."""
    with torch.inference_mode():
        bb = random_alexnet()
        first = prepared(bb, "bf16")
        assert prepared(bb, "bf16") is first
        fc7 = bb.classifier[4]
        fc7.weight = torch.nn.Parameter(fc7.weight.clone(), requires_grad=False)
        assert prepared(bb, "bf16") is not first


def test_dense_windows_no_weight_casts_on_the_hot_path(backbones):
    """After the first call, a bf16 dense pass casts no weight (autocast cast every one on every call): no copy_
    in its profile has a weight's shape, and the convolutions run fused. Nor is the stem's 32-channel output
    copied (the fused stem pads its input rather than cropping its output)."""
    bb = backbones["lite0"]
    img = np.random.default_rng(0).integers(0, 256, (230, 260, 3), dtype=np.uint8)
    weight_shapes = {tuple(p.shape) for p in bb.parameters()}
    with torch.inference_mode():
        dense_windows(bb, img, [1.0, 1.5], precision="bf16")
        with torch.profiler.profile(record_shapes=True) as prof:
            dense_windows(bb, img, [1.0, 1.5], precision="bf16")
    copies = [e for e in prof.events() if e.name == "aten::copy_"]
    assert not [e.input_shapes for e in copies if tuple(e.input_shapes[0]) in weight_shapes]
    assert not [e.input_shapes for e in copies if len(e.input_shapes[0]) == 4 and e.input_shapes[0][1] == 32]
    assert any(e.name == "mkldnn::_convolution_pointwise" for e in prof.events())


@given(h=st.integers(1, 40), w=st.integers(1, 40), kernel=st.sampled_from([3, 5]), depthwise=st.booleans(),
       act=st.sampled_from([None, "relu6"]), stem=st.booleans(), seed=st.integers(0, 2**16))
def test_strided_same_conv_without_pad_copy(h, w, kernel, depthwise, act, stem, seed):
    """The fused stride-2 "SAME" convolution equals the unfused padded-copy path at every size, odd and even:
    without a padded copy (one extra leading row/column on even sides, cropped) when the output has at most four
    times the input's channels, with the input padded (fused) when it has more, as the stem (3 -> 32)."""
    torch.manual_seed(seed)
    cin, cout = (3, 32) if stem else (8, 8)
    conv = SameConv2d(cin, cout, kernel, 2, groups=8 if depthwise and not stem else 1).requires_grad_(False)
    x = torch.randn(1, cin, h, w).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = conv(x, act)
        conv.fused = True
        got = conv(x, act)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@given(h=st.integers(1, 40), w=st.integers(1, 40), kernel=st.sampled_from([3, 5]), seed=st.integers(0, 2**16))
def test_strided_block_crops_after_projection(h, w, kernel, seed):
    """A fused stride-2 inverted-residual block (the depthwise output's extra border dropped after the 1x1
    projection) equals the unfused block."""
    torch.manual_seed(seed)
    block = _MBConv(4, 6, kernel, 2, 6).requires_grad_(False)
    x = torch.randn(1, 4, h, w).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = block(x)
        for conv in block.modules():
            if isinstance(conv, SameConv2d):
                conv.fused = True
        got = block(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
