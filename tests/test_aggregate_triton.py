"""The Triton aggregation kernel (midlevel_fast/ops/aggregate/triton.py) against the oracle.

On a machine without a GPU it runs under Triton's interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET before this module is imported; the tests request the ``triton_device`` fixture).
"""
from __future__ import annotations

import pytest
import torch

from midlevel_fast import output_maps, power_mean
from tests.oracle.aggregate import output_maps_reference, power_mean_reference

from tests.helpers import compile_for_gpus

pytest.importorskip("triton")

from midlevel_fast.ops.aggregate import triton as aggregate_kernel  # noqa: E402  (needs triton)


def random_windows(m: int, c: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes partly or wholly outside, sub-pixel and degenerate among them, and softmax probabilities."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(m, 2, generator=g) * torch.tensor([1.6 * w, 1.6 * h]) - torch.tensor([0.3 * w, 0.3 * h])
    wh = torch.rand(m, 2, generator=g) * torch.tensor([0.7 * w, 0.7 * h])
    wh[::7] *= 0.01  # covers no pixel centre, or one
    wh[::11] = 0.0
    boxes = torch.cat([xy, xy + wh], dim=1)
    return boxes, torch.softmax(3 * torch.randn(m, c, generator=g), dim=1)


@pytest.mark.parametrize("m,c,h,w", [(40, 5, 37, 53), (25, 70, 9, 40), (1, 1, 1, 1)])
def test_output_maps_match_reference(triton_device, m, c, h, w):
    boxes, probs = random_windows(m, c, h, w, seed=m + c)
    got = output_maps(boxes, probs.to(triton_device), h, w, backend="triton")
    assert got.shape == (c, h, w) and got.dtype == torch.float32 and got.device.type == triton_device
    torch.testing.assert_close(got.cpu(), output_maps_reference(boxes, probs, h, w), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("k", [5.0, 1.0, 2.5])
def test_power_mean_matches_reference(triton_device, k):
    _, probs = random_windows(50, 70, 10, 10, seed=3)
    got = power_mean(probs.to(triton_device), k, backend="triton")
    assert got.dtype == probs.dtype
    torch.testing.assert_close(got.cpu(), power_mean_reference(probs, k).float(), atol=1e-7, rtol=1e-5)


def test_scores_and_maps_in_one_launch(triton_device):
    boxes, probs = random_windows(30, 4, 20, 30, seed=7)
    scores, maps = aggregate_kernel.aggregate_triton(probs.to(triton_device), k=5.0, boxes=boxes, height=20,
                                                     width=30)
    torch.testing.assert_close(scores.cpu(), power_mean_reference(probs, 5.0).float(), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(maps.cpu(), output_maps_reference(boxes, probs, 20, 30), atol=1e-6, rtol=1e-5)


def test_edge_cases(triton_device):
    probs = torch.rand(0, 3, device=triton_device)
    assert (output_maps(torch.zeros(0, 4), probs, 4, 5, backend="triton") == 0).all()
    with pytest.raises(ValueError, match="no patches"):
        power_mean(probs, 5.0, backend="triton")
    with pytest.raises(ValueError, match="no patches"):
        aggregate_kernel.aggregate_triton(probs, k=5.0)


COMPILE_AGGREGATE = r"""
from midlevel_fast.ops.aggregate import triton as aggregate

sig = dict(ranges_ptr="*i32", probs_ptr="*fp32", maps_ptr="*fp32", scores_ptr="*fp32", M="i32", C="i32",
           H="i32", W="i32", stride_pm="i32", stride_pc="i32", tiles_x="i32", n_tiles="i32", k="fp32",
           inv_m="fp32", K_INT="constexpr", BLOCK_C="constexpr", TILE_H="constexpr", TILE_W="constexpr")
for target in TARGETS:
    for k_int in (5, 0):
        consts = dict(K_INT=k_int, BLOCK_C=aggregate.MAX_BLOCK_C, TILE_H=aggregate.TILE_H, TILE_W=aggregate.TILE_W)
        src = ASTSource(aggregate._aggregate_kernel, sig, constexprs=consts)
        triton.compile(src, target=target, options=dict(enable_fp_fusion=True))
"""


def test_kernel_compiles_for_ampere_and_hopper(tmp_path):
    compile_for_gpus(COMPILE_AGGREGATE, tmp_path)
