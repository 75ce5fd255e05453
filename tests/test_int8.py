"""precision="int8" (midlevel_fast.backbones.int8): one int8 convolution against the float64 oracle of the scheme
at odd sizes (hypothesis), the whole Lite0 trunk against float32 on real VOC images within the tolerance table and
keeping the top class, the shipped ranges, and the errors for what int8 does not cover."""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from midlevel_fast import load_model, score_image
from midlevel_fast.backbones import efficientnet_lite0
from midlevel_fast.backbones.same_conv import SameConv2d
from midlevel_fast.backbones.int8 import (Int8Conv, QuantizedActivation, calibrate_int8, quantization_params,
                                          shipped_ranges)
from midlevel_fast.backbones.prepared import prepared
from midlevel_fast.io.image_io import load_image
from midlevel_fast.features.dense import default_window_step, dense_planes
from midlevel_fast.runtime.precision import resolve_precision
from tests.helpers import random_alexnet, rel_l2, skimage_photo
from tests.oracle.int8_conv import dequantize_reference, int8_conv_reference, quantize_reference

# Max relative L2 error of int8 window features against float32 (Lite0, ImageNet weights, shipped ranges):
# per plane of a real VOC image, and over all the planes of one image (measured on the first five val images:
# at most 0.189 and 0.150).
PLANE_TOLERANCE, IMAGE_TOLERANCE = 0.25, 0.20
VOC_VAL_IMAGES = 5


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0()


@st.composite
def conv_case(draw):
    cin = draw(st.integers(1, 8))
    depthwise = draw(st.booleans())
    cout = cin if depthwise else draw(st.integers(1, 8))
    stride = draw(st.sampled_from([1, 2]))
    residual = stride == 1 and cin == cout and draw(st.booleans())
    act = None if residual else draw(st.sampled_from([None, "relu6"]))
    return dict(cin=cin, cout=cout, groups=cin if depthwise else 1, kernel=draw(st.sampled_from([1, 3, 5])),
                stride=stride, residual=residual, act=act, h=draw(st.integers(1, 23)), w=draw(st.integers(1, 23)),
                x_q=(draw(st.floats(0.005, 0.1)), draw(st.integers(0, 255))),
                float_out=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@given(case=conv_case())
# A strided output one column wide: oneDNN's AMX kernels get it wrong unless widened (backbones.fused).
@example(case=dict(cin=3, cout=6, groups=1, kernel=5, stride=2, residual=False, act=None, h=9, w=1, x_q=(0.05, 100),
                   float_out=False, seed=0))
@example(case=dict(cin=8, cout=6, groups=1, kernel=3, stride=2, residual=False, act="relu6", h=23, w=2,
                   x_q=(0.02, 3), float_out=True, seed=1))
def test_int8_conv_matches_oracle(case):
    """An Int8Conv equals the scheme's float64 arithmetic: uint8 outputs within one step (float32 rounding at a
    .5 boundary), float32 outputs to float32 rounding; any zero point pads with the real 0."""
    g = torch.Generator().manual_seed(case["seed"])
    conv = SameConv2d(case["cin"], case["cout"], case["kernel"], case["stride"], case["groups"])
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
    qx = torch.randint(0, 256, (1, case["cin"], case["h"], case["w"]), dtype=torch.uint8, generator=g)
    qx = qx.contiguous(memory_format=torch.channels_last)
    out_q = None if case["float_out"] else (0.04, 128)
    residual = None
    if case["residual"]:
        qr = torch.randint(0, 256, qx.shape, dtype=torch.uint8, generator=g).contiguous(
            memory_format=torch.channels_last)
        residual = (qr, 0.03, 90)
    int8 = Int8Conv(conv, case["x_q"], out_q)
    before = None if residual is None else residual[0].clone()
    got = int8(QuantizedActivation(qx, *case["x_q"]), case["act"],
               None if residual is None else QuantizedActivation(*residual))
    want = int8_conv_reference(qx, case["x_q"], conv.weight.detach(), conv.bias.detach(), case["stride"],
                               case["groups"], case["act"], residual, out_q)
    if residual is not None:
        assert torch.equal(residual[0], before)  # the caller's residual is not summed into
    if out_q is None:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    else:
        assert isinstance(got, QuantizedActivation) and (got.scale, got.zero_point) == out_q
        assert got.values.shape == want.shape
        assert (got.values.int() - want.int()).abs().max().item() <= 1


@given(h=st.integers(1, 20), w=st.integers(1, 20), seed=st.integers(0, 2**16))
@example(h=9, w=1, seed=0)
def test_int8_conv_quantises_a_float_input(h, w, seed):
    """The first convolution takes float32 and quantises it with its input_q (round half to even, saturating)."""
    g = torch.Generator().manual_seed(seed)
    conv = SameConv2d(3, 4, 3, 2)
    x = torch.randn(1, 3, h, w, generator=g) * 1.5  # beyond the range on purpose: saturates
    x_q = (1 / 128, 127)
    got = Int8Conv(conv, x_q, None)(x, "relu6")
    want = int8_conv_reference(quantize_reference(x, *x_q), x_q, conv.weight.detach(), conv.bias.detach(), 2, 1,
                               "relu6", None, None)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_quantization_params_contain_zero():
    assert quantization_params(-127 / 128, 1.0) == (1 / 128, 127)  # Lite0's input: exactly x with scale 1/128
    scale, zp = quantization_params(0.5, 6.0)  # a range above 0 is widened down to 0
    assert zp == 0 and scale == pytest.approx(6 / 255)
    scale, zp = quantization_params(-3.0, -1.0)
    assert zp == 255 and dequantize_reference(torch.tensor([0]), scale, zp).item() == pytest.approx(-3.0)


def test_int8_trunk_on_real_voc_images(lite0, voc, voc_val_ids):
    """The int8 copy (shipped ranges) against the float32 module on the dense planes of real VOC val images:
    window features within the tolerance table, the image's ImageNet top class among float32's best five."""
    net = prepared(lite0, "int8")
    step = default_window_step(lite0.window)
    with torch.inference_mode():
        for image_id in voc_val_ids[:VOC_VAL_IMAGES]:
            planes = dense_planes(lite0, load_image(voc / "JPEGImages" / f"{image_id}.jpg"))
            want = [lite0.window_head(lite0.trunk(p), step)[0].flatten(1).t() for p in planes]
            got = [net.window_head(net.trunk(p), step)[0].flatten(1).t() for p in planes]
            assert all(g.dtype == torch.float32 and g.shape == w.shape for g, w in zip(got, want))
            assert max(rel_l2(g, w) for g, w in zip(got, want)) < PLANE_TOLERANCE, image_id
            assert rel_l2(torch.cat(got), torch.cat(want)) < IMAGE_TOLERANCE, image_id
            # Among 1000 ImageNet classes near-ties are common (2008_000075: "trolleybus" vs "passenger car"): the
            # int8 top class must be one of float32's best five. The VOC head's top class must match exactly
            # (test_int8_scores_keep_the_top_class).
            scores = [torch.softmax(lite0.imagenet_head(torch.cat(f)), 1).pow(5).mean(0) for f in (got, want)]
            assert scores[0].argmax().item() in scores[1].topk(5).indices.tolist(), image_id


def test_int8_scores_keep_the_top_class(voc, voc_val_ids):
    """score_image with precision="int8" and the shipped VOC head: the same top VOC class as float32 on real VOC
    val images, and probabilities close to float32's."""
    model = load_model()
    for image_id in voc_val_ids[:VOC_VAL_IMAGES]:
        path = voc / "JPEGImages" / f"{image_id}.jpg"
        fp32, int8 = (score_image(path, model, precision=p) for p in ("fp32", "int8"))
        assert torch.equal(fp32.windows, int8.windows)
        assert fp32.top(1)[0][0] == int8.top(1)[0][0], image_id
        assert (fp32.probs - int8.probs).abs().mean().item() < 2e-2, image_id


def test_shipped_ranges_match_the_imagenet_weights(lite0):
    ranges = shipped_ranges(lite0)
    convs = [n for n, m in lite0.named_modules() if isinstance(m, SameConv2d)]
    assert ranges is not None and list(ranges) == convs
    assert all(lo <= 0 <= hi and hi > lo for lo, hi in ranges.values())


def test_int8_needs_ranges_for_other_weights():
    """Other weights than the ImageNet ones are refused with the way out, which then works: calibrate_int8 on the
    user's inputs, stored on the backbone; the copy is remade when the ranges change."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bb = efficientnet_lite0(pretrained=False)
    x = torch.randn(1, 3, 96, 130, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="calibrated for these weights.*calibrate_int8"):
        prepared(bb, "int8")
    bb.int8_ranges = calibrate_int8(bb, [x, x.flip(-1)])
    net = prepared(bb, "int8")
    assert prepared(bb, "int8") is net
    with torch.inference_mode():
        assert rel_l2(net.trunk(x), bb.trunk(x)) < 0.25
    bb.int8_ranges = {name: (lo * 2, hi * 2) for name, (lo, hi) in bb.int8_ranges.items()}
    assert prepared(bb, "int8") is not net
    with pytest.raises(ValueError, match="no inputs"):
        calibrate_int8(bb, [])
    bb.int8_ranges = {"_conv_stem": (0.0, 6.0)}
    with pytest.raises(ValueError, match="lack 48 convolutions"):
        prepared(bb, "int8")
    bb.int8_ranges = {name: (float("nan"), 1.0) for name in calibrate_int8(bb, [x])}
    with pytest.raises(ValueError, match="range of '_conv_stem' is"):
        prepared(bb, "int8")


def test_int8_refusals(lite0, monkeypatch):
    with pytest.raises(ValueError, match="int8' is implemented for efficientnet_lite0, not alexnet"):
        prepared(random_alexnet(), "int8")
    assert resolve_precision("int8", "dense", torch.device("cpu")) == "int8"
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)  # as on a GPU: no oneDNN there
    with pytest.raises(ValueError, match="runs on the CPU"):
        prepared(lite0, "int8")


def test_int8_batched_mode_keeps_the_top_class():
    """The batched mode runs the same int8 copy on 224 patches: same top ImageNet class as float32 on a photo."""
    model = load_model("imagenet")
    photo = skimage_photo("chelsea")
    fp32, int8 = (score_image(photo, model, mode="batched", precision=p) for p in ("fp32", "int8"))
    assert fp32.top(1)[0][0] == int8.top(1)[0][0]
    assert (fp32.probs - int8.probs).abs().mean().item() < 5e-3
