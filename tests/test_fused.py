"""The fused convolution (one oneDNN call) against the plain torch sequence conv -> + residual -> activation,
written out here with F.conv2d: float32 to rounding, bfloat16 within a tolerance, over odd sizes, strides,
groups (depthwise), activations and residuals."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from midlevel_fast.backbones.fused import conv2d

# dtype -> max |fused - reference| / max |reference|.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def reference(x, w, b, stride, padding, groups, act, residual):
    y = F.conv2d(x.double(), w.double(), b.double(), stride=stride, padding=padding, groups=groups)
    if residual is not None:
        y = y + residual.double()
    return {"relu": y.clamp(min=0), "relu6": y.clamp(0, 6), None: y}[act]


@given(h=st.integers(1, 23), w=st.integers(1, 23), cin=st.sampled_from([1, 3, 8]), depthwise=st.booleans(),
       kernel=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]), act=st.sampled_from([None, "relu", "relu6"]),
       with_residual=st.booleans(), channels_last=st.booleans(), dtype=st.sampled_from(list(TOLERANCE)),
       seed=st.integers(0, 2**16))
# A strided output one column wide: oneDNN's AMX kernels get it wrong unless widened (backbones.fused).
@example(h=9, w=1, cin=1, depthwise=False, kernel=5, stride=2, act=None, with_residual=False, channels_last=False,
         dtype=torch.bfloat16, seed=0)
@example(h=23, w=2, cin=8, depthwise=False, kernel=3, stride=2, act=None, with_residual=False,
         channels_last=True, dtype=torch.bfloat16, seed=1)
def test_fused_matches_reference(h, w, cin, depthwise, kernel, stride, act, with_residual, channels_last, dtype,
                                 seed):
    padding = kernel // 2
    if (h + 2 * padding - kernel) < 0 or (w + 2 * padding - kernel) < 0:
        return
    g = torch.Generator().manual_seed(seed)
    cout, groups = (cin, cin) if depthwise else (6, 1)
    x = torch.randn(1, cin, h, w, generator=g) * 3
    weight = torch.randn(cout, cin // groups, kernel, kernel, generator=g)
    bias = torch.randn(cout, generator=g)
    out_h, out_w = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    residual = torch.randn(1, cout, out_h, out_w, generator=g) if with_residual else None
    if channels_last:
        x, weight = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))
    want = reference(x, weight, bias, stride, padding, groups, act, residual)
    cast = [t if t is None else t.to(dtype) for t in (x, weight, bias, residual)]
    with torch.inference_mode():
        got = conv2d(cast[0], cast[1], cast[2], stride=stride, padding=padding, groups=groups, act=act,
                     residual=cast[3], fused=True)
    assert got.dtype == dtype and got.shape == want.shape
    scale = max(want.abs().max().item(), 1.0)
    assert (got.double() - want).abs().max().item() / scale < TOLERANCE[dtype]


def test_unfused_is_the_torch_sequence():
    g = torch.Generator().manual_seed(1)
    x, weight, bias = torch.randn(2, 4, 9, 7, generator=g), torch.randn(4, 4, 3, 3, generator=g), torch.randn(4)
    residual = torch.randn(2, 4, 9, 7, generator=g)
    got = conv2d(x, weight, bias, padding=1, act="relu6", residual=residual)
    torch.testing.assert_close(got, F.relu6(F.conv2d(x, weight, bias, padding=1) + residual), rtol=0, atol=0)


def test_unknown_activation_is_refused():
    x, weight = torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match="activation 'gelu'"):
        conv2d(x, weight, None, act="gelu", fused=True)
