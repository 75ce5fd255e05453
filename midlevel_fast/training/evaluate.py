"""The evaluation of a head on cached patches: patch probabilities, power-mean image scores, and their AP per
class (:mod:`midlevel_fast.metrics.average_precision`, the devkit's rules)."""
from __future__ import annotations

import numpy as np
import torch

from midlevel_fast.metrics.average_precision import Method, mean_average_precision
from midlevel_fast.model.head import class_probabilities
from midlevel_fast.ops.aggregate import power_mean
from midlevel_fast.training.patches import EvalSet


def patch_probabilities(head: torch.nn.Module, features: torch.Tensor, objective: str, num_classes: int,
                        chunk: int = 16384, bf16: bool = False) -> torch.Tensor:
    """``(P, C)`` float32 probabilities of the reported classes (:func:`midlevel_fast.model.head.class_probabilities`)
    of ``features (P, F)``, ``chunk`` rows per forward; ``bf16`` runs the matrix products in bfloat16."""
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(features), chunk):
            out.append(class_probabilities(head(features[start: start + chunk].float()), objective, num_classes))
    return torch.cat(out)


def image_scores(probs: torch.Tensor, image_index: torch.Tensor, n_images: int, k: float) -> torch.Tensor:
    """Per image, the power mean :func:`midlevel_fast.ops.aggregate.power_mean` of its rows of the patch
    probabilities ``probs (P, C)`` (``image_index (P,)`` says whose row it is): ``(n_images, C)`` float64, 0 for an
    image without patches."""
    counts = torch.bincount(image_index, minlength=n_images).tolist()
    rows = probs.double()[torch.argsort(image_index, stable=True)].split(counts)
    scores = torch.zeros(n_images, probs.shape[1], dtype=torch.float64)
    for i, image_rows in enumerate(rows):
        if len(image_rows):
            scores[i] = power_mean(image_rows, k)
    return scores


def evaluate_head(head: torch.nn.Module, data: EvalSet, objective: str, k: float,
                  method: Method = "voc2010", bf16: bool = False) -> tuple[np.ndarray, float]:
    """Per-class AP and mAP of ``head`` on ``data`` with power-mean image scores; ``head`` is left in the
    training mode it had."""
    was_training = head.training
    head.eval()
    probs = patch_probabilities(head, data.features, objective, data.positives.shape[1], bf16=bf16)
    head.train(was_training)
    scores = image_scores(probs, data.image_index, len(data.positives), k).numpy()
    return mean_average_precision(scores, data.positives, data.ignore, method)
