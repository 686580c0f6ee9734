"""The audit metrics of method.md ("What a result must show"), per class and overall.

Conventions:
- Confidence: p_y = softmax(C(x))_y for the wanted label y; "confident" means p_y ≥ 0.99.
- Distinctness needs a reference set of real images (e.g. the held-out split). The AUROCs
  score the task "find the counterfeits among real images" (counterfeits are positives)
  with a detector's anomaly score: −MSP (max softmax probability; Hendrycks & Gimpel 2017),
  the k-th nearest-neighbour distance to the reference set in the classifier's (L2-normalised)
  feature space (Sun et al. 2022) and in pixel space. 0.5 is chance; an MSP-AUROC below 0.5
  means the classifier is *more* sure of the counterfeits than of real data; a kNN-AUROC near
  1 means they really are different. Real images are scored leave-one-out.
- Diversity: mean pairwise L2 distance between images of one class, and mean pairwise cosine
  of their features (lower = more diverse); real images of the same class beside them.
  A class is "collapsed" when its pixel diversity is under half that of its real images (or,
  without a reference, when images differ by under 2% RMS per pixel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from models.classifier import LoadedClassifier
from models.contracts.artifacts import CONFIDENT, ClassMetrics, Cost, InversionMetrics
from models.scoring import ClassifierOutputs, classifier_outputs

__all__ = [
    "MetricsResult",
    "auroc",
    "compute_metrics",
    "knn_distances",
    "mean_pairwise_cosine",
    "mean_pairwise_distance",
]

COLLAPSE_RATIO = 0.5  # pixel diversity below this share of the real class's: collapsed
COLLAPSE_RMS = 0.02  # without a reference: mean pairwise RMS pixel difference below this


def auroc(
    positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray
) -> float | None:
    """P(score of a positive > score of a negative), ties counting half (Mann–Whitney U)."""
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return None
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < scores.size:  # average ranks over ties
        end = start
        while end + 1 < scores.size and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    rank_sum = ranks[: pos.size].sum()
    return float((rank_sum - pos.size * (pos.size + 1) / 2.0) / (pos.size * neg.size))


def knn_distances(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    exclude_self: bool = False,
    chunk: int = 1024,
) -> torch.Tensor:
    """Distance (n,) from each query row to its k-th nearest bank row (L2).

    `exclude_self`: queries are the bank itself (same order); each row skips itself.
    """
    q, b = queries.flatten(1).double(), bank.flatten(1).double()
    available = b.shape[0] - (1 if exclude_self else 0)
    if available < 1:
        raise ValueError("the reference set is too small for nearest-neighbour distances")
    k = max(1, min(k, available))
    result = []
    for first in range(0, q.shape[0], chunk):
        d = torch.cdist(q[first : first + chunk], b)  # (m, n_bank)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + first] = math.inf
        result.append(d.topk(k, dim=1, largest=False).values[:, -1])
    return torch.cat(result).float() if result else torch.empty(0)


def mean_pairwise_distance(x: torch.Tensor) -> float | None:
    """Mean L2 distance over pairs i < j of rows of x (n, ...)."""
    flat = x.flatten(1).double()
    if flat.shape[0] < 2:
        return None
    return float(torch.pdist(flat).mean())


def mean_pairwise_cosine(features: torch.Tensor) -> float | None:
    """Mean cos(f_i, f_j) over pairs i ≠ j."""
    n = features.shape[0]
    if n < 2:
        return None
    unit = F.normalize(features.flatten(1).double(), dim=1)
    similarity = unit @ unit.T
    return float((similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1)))


@dataclass(frozen=True)
class MetricsResult:
    """The figures (the contract written to metrics.json) and the classifier outputs they came
    from, which detectors built on top (the OOD evasion table) reuse."""

    metrics: InversionMetrics
    counterfeit_outputs: ClassifierOutputs
    reference_outputs: ClassifierOutputs | None = None


def _mean(values: torch.Tensor) -> float | None:
    return float(values.double().mean()) if values.numel() else None


def _mean_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def compute_metrics(
    classifier: LoadedClassifier,
    images: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    reference_x: torch.Tensor | None = None,
    reference_y: torch.Tensor | Sequence[int] | None = None,
    cost: Cost | None = None,
    *,
    train_x: torch.Tensor | None = None,
    knn_k: int = 5,
    confident_threshold: float = CONFIDENT,
    batch_size: int = 500,
) -> MetricsResult:
    """All audit figures for counterfeits `images` (n, C, H, W) aimed at `targets` (n,).
    The classifier sees `batch_size` images at a time.

    `reference_x` (m, C, H, W) [0, 1] real images (with labels `reference_y` for per-class
    comparisons) enable the distinctness figures; `train_x` adds the distance to the nearest
    training image for counterfeits and for the reference images.
    """
    images = images.detach().float().cpu()
    y = torch.as_tensor(targets).long().flatten().cpu()
    if images.shape[0] != y.shape[0]:
        raise ValueError("images and targets differ in length")
    out = classifier_outputs(classifier, images, batch_size)
    p_target = out.probabilities.gather(1, y[:, None]).squeeze(1) if len(y) else torch.empty(0)
    correct = out.probabilities.argmax(dim=1) == y
    msp = out.probabilities.max(dim=1).values

    ref_out: ClassifierOutputs | None = None
    ref_y: torch.Tensor | None = None
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    nn_fake = nn_real = train_fake = train_real = None
    if reference_x is not None and reference_x.shape[0] >= 2:
        ref = reference_x.detach().float().cpu()
        ref_out = classifier_outputs(classifier, ref, batch_size)
        if reference_y is not None:
            ref_y = torch.as_tensor(reference_y).long().flatten().cpu()
        ref_msp = ref_out.probabilities.max(dim=1).values
        fake_unit = F.normalize(out.features.double(), dim=1)
        ref_unit = F.normalize(ref_out.features.double(), dim=1)
        scores["msp"] = (-msp, -ref_msp)
        scores["feature"] = (
            knn_distances(fake_unit, ref_unit, knn_k),
            knn_distances(ref_unit, ref_unit, knn_k, exclude_self=True),
        )
        scores["pixel"] = (
            knn_distances(images, ref, knn_k),
            knn_distances(ref, ref, knn_k, exclude_self=True),
        )
        nn_fake = knn_distances(images, ref, 1)
        nn_real = knn_distances(ref, ref, 1, exclude_self=True)
        if train_x is not None and train_x.shape[0] > 0:
            train = train_x.detach().float().cpu()
            train_fake = knn_distances(images, train, 1)
            train_real = knn_distances(ref, train, 1)

    ref_images = (
        reference_x.detach().float().cpu()
        if ref_out is not None and reference_x is not None
        else None
    )

    def group(fake_mask: torch.Tensor, real_mask: torch.Tensor | None) -> ClassMetrics:
        def real(values: torch.Tensor) -> torch.Tensor:
            return values if real_mask is None else values[real_mask]

        def real_mean(values: torch.Tensor | None) -> float | None:
            return None if values is None else _mean(real(values))

        def fake_mean(values: torch.Tensor | None) -> float | None:
            return None if values is None else _mean(values[fake_mask])

        aurocs = {
            key: auroc(fake[fake_mask].numpy(), real(ref_scores).numpy())
            for key, (fake, ref_scores) in scores.items()
        }
        diversity = mean_pairwise_distance(images[fake_mask])
        real_diversity = real_cosine = real_confidence = None
        if ref_out is not None and ref_images is not None:
            real_diversity = mean_pairwise_distance(real(ref_images))
            real_cosine = mean_pairwise_cosine(real(ref_out.features))
            real_confidence = real_mean(ref_out.probabilities.max(dim=1).values)
        return ClassMetrics(
            count=int(fake_mask.sum()),
            mean_confidence=fake_mean(p_target),
            confident_share=fake_mean((p_target >= confident_threshold).float()),
            argmax_accuracy=fake_mean(correct.float()),
            nn_distance=fake_mean(nn_fake),
            reference_nn_distance=real_mean(nn_real),
            train_nn_distance=fake_mean(train_fake),
            reference_train_nn_distance=real_mean(train_real),
            msp_auroc=aurocs.get("msp"),
            knn_feature_auroc=aurocs.get("feature"),
            knn_pixel_auroc=aurocs.get("pixel"),
            pixel_diversity=diversity,
            reference_pixel_diversity=real_diversity,
            feature_cosine=mean_pairwise_cosine(out.features[fake_mask]),
            reference_feature_cosine=real_cosine,
            mean_reference_confidence=real_confidence,
            collapsed=_collapsed(diversity, real_diversity, images[0].numel()),
        )

    names = tuple(classifier.class_names)
    per_class: dict[str, ClassMetrics] = {}
    for k in sorted(set(y.tolist())):
        real_mask = (ref_y == k) if ref_y is not None else None
        if real_mask is not None and not bool(real_mask.any()):
            real_mask = None
        per_class[names[k]] = group(y == k, real_mask)
    everything = torch.ones_like(y, dtype=torch.bool)
    overall = group(everything, None)
    classes = list(per_class.values())
    # Diversity is a within-class figure: overall = mean over classes (pairs across classes
    # would count class differences as variety).
    overall = overall.model_copy(
        update={
            "pixel_diversity": _mean_of([m.pixel_diversity for m in classes]),
            "reference_pixel_diversity": _mean_of([m.reference_pixel_diversity for m in classes]),
            "feature_cosine": _mean_of([m.feature_cosine for m in classes]),
            "reference_feature_cosine": _mean_of([m.reference_feature_cosine for m in classes]),
            "collapsed": any(bool(m.collapsed) for m in classes) if classes else None,
        }
    )
    collapsed = [name for name, m in per_class.items() if m.collapsed]
    metrics = InversionMetrics(
        overall=overall,
        per_class=per_class,
        cost=cost,
        collapsed_classes=collapsed,
        reference_size=0 if reference_x is None else int(reference_x.shape[0]),
        knn_k=knn_k,
        confident_threshold=confident_threshold,
    )
    return MetricsResult(metrics, out, ref_out)


def _collapsed(diversity: float | None, real_diversity: float | None, pixels: int) -> bool | None:
    if diversity is None:
        return None
    if real_diversity is not None and real_diversity > 0:
        return diversity < COLLAPSE_RATIO * real_diversity
    return diversity / math.sqrt(pixels) < COLLAPSE_RMS
