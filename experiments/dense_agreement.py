"""How far dense scoring is from per-patch scoring on real VOC val images.

    python -m experiments.dense_agreement [--images 50] [--head imagenet|PATH]

For each image: the Spearman ρ between the class scores of ``mode="dense"`` and ``mode="batched"`` (the paper
grid), and the mean |Δ| between the dense windows' probabilities and the probabilities of the same boxes
cropped and evaluated one patch at a time. The ρ is then split in two: dense windows against the crops of
their own boxes (the context effect alone: same boxes, the trunk sees the neighbours or zero padding), and
those crops against the grid's (the patch-set effect alone: per-patch both). Prints per-image rows and the
medians.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from midlevel_fast import load_image, load_model, power_mean, score_image
from midlevel_fast.ops.crop_resize import crop_resize
from midlevel_fast.features.dense import dense_windows
from midlevel_fast.runtime.precision import resolve_precision
from midlevel_fast.cache.feature_cache import FeatureCache
from tests.helpers import voc_root


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions)."""
    order = torch.argsort(x, stable=True)
    r = torch.empty(len(x), dtype=torch.float64)
    r[order] = torch.arange(len(x), dtype=torch.float64)
    values, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, r)
    counts = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(r))
    return (sums / counts)[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def cached_agreement(head: torch.nn.Module, dense: FeatureCache, batched: FeatureCache, image_ids: list[str],
                     k: float) -> float:
    """Median over ``image_ids`` of the Spearman ρ between the power-mean class scores of ``head`` (softmax
    objective) on the cached dense windows and on the cached grid crops."""
    head.eval()
    rhos = []
    with torch.inference_mode():
        for image_id in image_ids:
            scores = []
            for cache in (dense, batched):
                logits = head(torch.from_numpy(np.array(cache.load(image_id).features)).float())
                scores.append(power_mean(torch.softmax(logits.double(), 1)[:, :-1], k))
            rhos.append(spearman(*scores))
    return statistics.median(rhos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--head", default=None, help="head file, 'imagenet', or the default model")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="of the dense trunk")
    args = parser.parse_args()
    root = voc_root()
    if root is None:
        raise SystemExit("VOC data not found (set MIDLEVEL_FAST_VOC)")
    ids = (root / "ImageSets" / "Main" / "val.txt").read_text().split()[: args.images]
    model = load_model(args.head)
    bb = model.backbone
    rhos, context_rhos, set_rhos, deltas = [], [], [], []
    t0 = time.perf_counter()
    for image_id in ids:
        img = load_image(root / "JPEGImages" / f"{image_id}.jpg")
        dense = score_image(img, model, mode="dense", precision=args.precision)
        batched = score_image(img, model, mode="batched", precision="fp32")  # the reference: per-patch float32
        rho = spearman(dense.scores, batched.scores)
        with torch.inference_mode():
            d = dense_windows(bb, img, model.info.scales, model.info.grid_step,
                              precision=resolve_precision(args.precision, "dense", torch.device("cpu")))
            crops = crop_resize(img, d.boxes, size=bb.input_size, mean=bb.mean, std=bb.std)
            same_boxes = torch.cat([model.probabilities(bb(crops[i: i + 64])) for i in range(0, len(crops), 64)])
            dense_probs = model.probabilities(d.features)
            delta = (dense_probs - same_boxes).abs().mean().item()
        same_box_scores = power_mean(same_boxes, dense.k)
        context_rhos.append(spearman(power_mean(dense_probs, dense.k), same_box_scores))
        set_rhos.append(spearman(same_box_scores, batched.scores))
        rhos.append(rho)
        deltas.append(delta)
        top_d, top_b = dense.top(1)[0][0], batched.top(1)[0][0]
        print(f"{image_id}  rho={rho:.3f} (context {context_rhos[-1]:.3f}, patch set {set_rhos[-1]:.3f})  "
              f"mean|dp|={delta:.2e}  top dense={top_d[:20]!r} batched={top_b[:20]!r}", flush=True)
    print(f"\n{len(ids)} images, {model.backbone.name}, {len(model.class_names)} classes, dense precision "
          f"{args.precision}, {time.perf_counter() - t0:.0f} s")
    print(f"median Spearman rho (dense vs batched class scores): {statistics.median(rhos):.3f} "
          f"(min {min(rhos):.3f})")
    print(f"  context alone (dense windows vs crops of the same boxes): {statistics.median(context_rhos):.3f}")
    print(f"  patch set alone (crops of the dense boxes vs the grid's crops): {statistics.median(set_rhos):.3f}")
    print(f"median mean|dp| (dense windows vs crops of the same boxes): {statistics.median(deltas):.2e}")


if __name__ == "__main__":
    main()
