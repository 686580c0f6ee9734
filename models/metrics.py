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
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch.nn import functional as F

from models.classifier import LoadedClassifier
from models.contracts.artifacts import CONFIDENT, ClassMetrics, Cost, InversionMetrics
from models.scoring import ClassifierOutputs, classifier_outputs

__all__ = [
    "MetricsBuilder",
    "MetricsResult",
    "auroc",
    "compute_metrics",
    "knn_distances",
    "mean_pairwise_cosine",
    "mean_pairwise_distance",
]

COLLAPSE_RATIO = 0.5  # pixel diversity below this share of the real class's: collapsed
COLLAPSE_RMS = 0.02  # without a reference: mean pairwise RMS pixel difference below this
FIGURE_SAMPLE = 1000
"""A class's pairwise and distance figures (diversity, feature cosine, nearest-neighbour
distances and the k-NN AUROCs) use at most this many of its samples, the first ones (i.i.d.
draws): their cost stays bounded whatever the job's size, while confidence and max-softmax
figures use every sample."""


def auroc(
    positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray
) -> float | None:
    """P(score of a positive > score of a negative), ties counting half (Mann–Whitney U)."""
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return None
    ranks = rankdata(np.concatenate([pos, neg]))  # ties share their average rank
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
    q, b = queries.flatten(1).float(), bank.flatten(1).float()
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
    return torch.cat(result) if result else torch.empty(0)


def mean_pairwise_distance(x: torch.Tensor) -> float | None:
    """Mean L2 distance over pairs i < j of rows of x (n, ...)."""
    flat = x.flatten(1).float()
    if flat.shape[0] < 2:
        return None
    return float(torch.pdist(flat).double().mean())


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


@dataclass(frozen=True)
class _Reference:
    """What the real reference set contributes, computed once."""

    images: torch.Tensor  # (m, C, H, W)
    labels: torch.Tensor | None  # (m,)
    outputs: ClassifierOutputs
    unit: torch.Tensor  # (m, d) L2-normalised features, float64
    knn_feature: torch.Tensor  # (m,) leave-one-out k-th neighbour distance, features
    knn_pixel: torch.Tensor  # (m,) ... in pixels
    nn: torch.Tensor  # (m,) leave-one-out nearest neighbour distance, pixels
    train_nn: torch.Tensor | None  # (m,) nearest training image


class MetricsBuilder:
    """The audit figures, gathered class by class: a class's pixels are needed only while it is
    added (its diversity, its distances to the reference set), so a job holds one class of
    images at a time, whatever its size. Pairwise and distance figures of a class use at most
    FIGURE_SAMPLE of its samples (i.i.d. draws: the first ones), never all pairs of a job.
    """

    def __init__(
        self,
        classifier: LoadedClassifier,
        reference_x: torch.Tensor | None = None,
        reference_y: torch.Tensor | Sequence[int] | None = None,
        *,
        train_x: torch.Tensor | None = None,
        knn_k: int = 5,
        batch_size: int = 500,
    ) -> None:
        self._classifier, self._k, self._batch = classifier, knn_k, batch_size
        self._train = None if train_x is None or not len(train_x) else train_x.detach().float()
        self._reference = self._prepare(reference_x, reference_y)
        self._indices: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._outputs: list[ClassifierOutputs] = []
        self._per_sample: dict[str, list[torch.Tensor]] = {"knn_pixel": [], "nn": [], "train": []}
        self._diversity: dict[int, float | None] = {}
        self._pixels = 1
        self.score_seconds = 0.0  # the classifier's pass over the counterfeits
        self.figure_seconds = 0.0  # everything else: the figures

    def _prepare(
        self, x: torch.Tensor | None, y: torch.Tensor | Sequence[int] | None
    ) -> _Reference | None:
        if x is None or x.shape[0] < 2:
            return None
        images = x.detach().float().cpu()
        outputs = classifier_outputs(self._classifier, images, self._batch)
        unit = F.normalize(outputs.features.double(), dim=1)
        return _Reference(
            images=images,
            labels=None if y is None else torch.as_tensor(y).long().flatten().cpu(),
            outputs=outputs,
            unit=unit,
            knn_feature=knn_distances(unit, unit, self._k, exclude_self=True),
            knn_pixel=knn_distances(images, images, self._k, exclude_self=True),
            nn=knn_distances(images, images, 1, exclude_self=True),
            train_nn=None if self._train is None else knn_distances(images, self._train, 1),
        )

    @property
    def reference_outputs(self) -> ClassifierOutputs | None:
        return None if self._reference is None else self._reference.outputs

    def add_class(self, label: int, images: torch.Tensor, indices: torch.Tensor) -> None:
        """Every counterfeit aimed at `label` (n, C, H, W) in [0, 1], and where each stands in
        the run (`indices`, for the per-sample order of the results)."""
        images = images.detach().float().cpu()
        self._pixels = int(images[0].numel()) if len(images) else self._pixels
        self._indices.append(torch.as_tensor(indices).long().flatten())
        self._targets.append(torch.full((len(images),), label, dtype=torch.long))
        start = time.perf_counter()
        self._outputs.append(classifier_outputs(self._classifier, images, self._batch))
        scored = time.perf_counter()
        self.score_seconds += scored - start
        self._add_figures(label, images)
        self.figure_seconds += time.perf_counter() - scored

    def _add_figures(self, label: int, images: torch.Tensor) -> None:
        measured = images[:FIGURE_SAMPLE]
        self._diversity[label] = mean_pairwise_distance(measured)
        ref = self._reference

        def per_sample(distances: torch.Tensor) -> torch.Tensor:
            """The measured samples' distances; NaN for the rest of the class."""
            return torch.cat([distances, torch.full((len(images) - len(measured),), math.nan)])

        if ref is not None:
            self._per_sample["knn_pixel"].append(
                per_sample(knn_distances(measured, ref.images, self._k))
            )
            self._per_sample["nn"].append(per_sample(knn_distances(measured, ref.images, 1)))
        if self._train is not None:
            self._per_sample["train"].append(per_sample(knn_distances(measured, self._train, 1)))

    def finish(
        self, cost: Cost | None = None, confident_threshold: float = CONFIDENT
    ) -> MetricsResult:
        """The figures of every class added; `cost` gets the scoring and figures' seconds."""
        start = time.perf_counter()
        order = torch.argsort(torch.cat(self._indices)) if self._indices else torch.empty(0)

        def gathered(chunks: list[torch.Tensor]) -> torch.Tensor | None:
            return torch.cat(chunks)[order] if chunks else None

        if self._outputs:
            logits = torch.cat([o.logits for o in self._outputs])[order]
            features = torch.cat([o.features for o in self._outputs])[order]
        else:
            k = self._classifier.num_classes
            logits, features = torch.empty(0, k), torch.empty(0, 0)
        out = ClassifierOutputs(logits, F.softmax(logits, dim=1), features)
        y = torch.cat(self._targets)[order] if self._targets else torch.empty(0, dtype=torch.long)
        p_target = out.probabilities.gather(1, y[:, None]).squeeze(1) if len(y) else y.float()
        correct = out.probabilities.argmax(dim=1) == y
        msp = out.probabilities.max(dim=1).values
        ref = self._reference
        scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        nn_fake = train_fake = None
        if ref is not None:
            pixel = gathered(self._per_sample["knn_pixel"])
            assert pixel is not None
            measured = pixel.isfinite()  # the samples the distance figures use
            feature = torch.full_like(pixel, math.nan)
            fake_unit = F.normalize(out.features[measured].double(), dim=1)
            feature[measured] = knn_distances(fake_unit, ref.unit, self._k)
            scores["msp"] = (-msp, -ref.outputs.probabilities.max(dim=1).values)
            scores["feature"] = (feature, ref.knn_feature)
            scores["pixel"] = (pixel, ref.knn_pixel)
            nn_fake = gathered(self._per_sample["nn"])
        train_fake = gathered(self._per_sample["train"])

        def group(
            fake: torch.Tensor, real: torch.Tensor | None, diversity: float | None
        ) -> ClassMetrics:
            """The figures of the counterfeits `fake` (a mask) beside the reference images
            `real` (a mask; None: all of them)."""

            def real_of(values: torch.Tensor) -> torch.Tensor:
                return values if real is None else values[real]

            def fake_mean(values: torch.Tensor | None) -> float | None:
                """The mean over the group's samples that have the figure (not NaN)."""
                if values is None:
                    return None
                chosen = values[fake]
                return _mean(chosen[~chosen.isnan()])

            def present(values: torch.Tensor) -> np.ndarray:
                chosen = values[fake]
                return chosen[~chosen.isnan()].numpy()

            aurocs = {
                name: auroc(present(fake_scores), real_of(real_scores).numpy())
                for name, (fake_scores, real_scores) in scores.items()
            }
            real_diversity = real_cosine = real_confidence = real_nn = real_train = None
            if ref is not None:
                real_images = real_of(ref.images)[:FIGURE_SAMPLE]
                real_diversity = mean_pairwise_distance(real_images)
                real_cosine = mean_pairwise_cosine(real_of(ref.outputs.features)[:FIGURE_SAMPLE])
                real_confidence = _mean(real_of(ref.outputs.probabilities.max(dim=1).values))
                real_nn = _mean(real_of(ref.nn))
                real_train = None if ref.train_nn is None else _mean(real_of(ref.train_nn))
            return ClassMetrics(
                count=int(fake.sum()),
                mean_confidence=fake_mean(p_target),
                confident_share=fake_mean((p_target >= confident_threshold).float()),
                argmax_accuracy=fake_mean(correct.float()),
                nn_distance=fake_mean(nn_fake),
                reference_nn_distance=real_nn,
                train_nn_distance=fake_mean(train_fake),
                reference_train_nn_distance=real_train,
                msp_auroc=aurocs.get("msp"),
                knn_feature_auroc=aurocs.get("feature"),
                knn_pixel_auroc=aurocs.get("pixel"),
                pixel_diversity=diversity,
                reference_pixel_diversity=real_diversity,
                feature_cosine=mean_pairwise_cosine(out.features[fake][:FIGURE_SAMPLE]),
                reference_feature_cosine=real_cosine,
                mean_reference_confidence=real_confidence,
                collapsed=_collapsed(diversity, real_diversity, self._pixels),
            )

        names = tuple(self._classifier.class_names)
        per_class: dict[str, ClassMetrics] = {}
        for k in sorted(set(y.tolist())):
            real_mask = None
            if ref is not None and ref.labels is not None and bool((ref.labels == k).any()):
                real_mask = ref.labels == k
            per_class[names[k]] = group(y == k, real_mask, self._diversity.get(k))
        classes = list(per_class.values())
        overall = group(torch.ones_like(y, dtype=torch.bool), None, None)
        # Diversity is a within-class figure: overall = mean over classes (pairs across classes
        # would count class differences as variety).
        overall = overall.model_copy(
            update={
                "pixel_diversity": _mean_of([m.pixel_diversity for m in classes]),
                "reference_pixel_diversity": _mean_of(
                    [m.reference_pixel_diversity for m in classes]
                ),
                "feature_cosine": _mean_of([m.feature_cosine for m in classes]),
                "reference_feature_cosine": _mean_of([m.reference_feature_cosine for m in classes]),
                "collapsed": any(bool(m.collapsed) for m in classes) if classes else None,
            }
        )
        if cost is not None:
            spent = self.figure_seconds + time.perf_counter() - start
            cost = cost.model_copy(
                update={"score_seconds": self.score_seconds, "metrics_seconds": spent}
            )
        metrics = InversionMetrics(
            overall=overall,
            per_class=per_class,
            cost=cost,
            collapsed_classes=[name for name, m in per_class.items() if m.collapsed],
            reference_size=0 if ref is None else int(ref.images.shape[0]),
            knn_k=self._k,
            confident_threshold=confident_threshold,
        )
        return MetricsResult(metrics, out, self.reference_outputs)


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
    """All audit figures for counterfeits `images` (n, C, H, W) aimed at `targets` (n,), held
    in memory at once (`MetricsBuilder` takes them a class at a time). The classifier sees
    `batch_size` images at a time.

    `reference_x` (m, C, H, W) [0, 1] real images (with labels `reference_y` for per-class
    comparisons) enable the distinctness figures; `train_x` adds the distance to the nearest
    training image for counterfeits and for the reference images.
    """
    images = images.detach().float().cpu()
    y = torch.as_tensor(targets).long().flatten().cpu()
    if images.shape[0] != y.shape[0]:
        raise ValueError("images and targets differ in length")
    builder = MetricsBuilder(
        classifier, reference_x, reference_y, train_x=train_x, knn_k=knn_k, batch_size=batch_size
    )
    for k in sorted(set(y.tolist())):
        at = torch.nonzero(y == k).flatten()
        builder.add_class(k, images[at], at)
    return builder.finish(cost, confident_threshold)


def _collapsed(diversity: float | None, real_diversity: float | None, pixels: int) -> bool | None:
    if diversity is None:
        return None
    if real_diversity is not None and real_diversity > 0:
        return diversity < COLLAPSE_RATIO * real_diversity
    return diversity / math.sqrt(pixels) < COLLAPSE_RMS
