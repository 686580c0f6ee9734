"""Metrics against hand-computed values, and PNG/grid output."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.classifier import LoadedClassifier
from models.contracts.artifacts import Cost, InversionMetrics, SampleIndex
from models.images import grid_array, grid_png, png_bytes
from models.metrics import (
    auroc,
    compute_metrics,
    knn_distances,
    mean_pairwise_cosine,
    mean_pairwise_distance,
)
from models.scoring import classifier_outputs, score_samples


def test_auroc_hand_values() -> None:
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 3], [2]) == 0.5
    assert auroc([2, 2], [2]) == 0.5  # ties count half
    assert auroc([1, 2, 3], [0.5, 2.5]) == pytest.approx(4 / 6)
    assert auroc([], [1]) is None


def test_loss_terms_hand_values() -> None:
    from models.losses import (
        cosine_similarity_loss,
        kl_divergence_loss,
        mode_seeking_loss,
        orthogonality_loss,
    )

    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    groups = torch.tensor([0, 0, 1])
    assert cosine_similarity_loss(features).item() == pytest.approx(2 * (1 / math.sqrt(2)) / 3)
    assert cosine_similarity_loss(features, groups).item() == pytest.approx(0.0)
    # ‖F̂F̂ᵀ − I‖²_F / N²: off-diagonal cosines 0, 1/√2, 1/√2 (each twice) → 2 · (0.5 + 0.5) / 9
    assert orthogonality_loss(features).item() == pytest.approx(2.0 / 9)
    logits = torch.tensor([[2.0, 0.0]])
    log_p0 = math.log(math.exp(2) / (math.exp(2) + 1))
    assert kl_divergence_loss(torch.tensor([[1.0, 0.0]]), logits).item() == pytest.approx(-log_p0)
    soft = torch.tensor([[0.5, 0.5]])
    expected = 0.5 * math.log(0.5) * 2 - 0.5 * (log_p0 + math.log(1 / (math.exp(2) + 1)))
    assert kl_divergence_loss(soft, logits).item() == pytest.approx(expected)
    images = torch.tensor([[0.0, 0.0], [1.0, 0.0]]).view(2, 1, 1, 2)
    latents = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    # image gap 0.5 per element, latent gap 2 per element → ratio 0.25 → loss 4
    assert mode_seeking_loss(images, latents).item() == pytest.approx(4.0, rel=1e-3)


def test_distances_and_diversity_hand_values() -> None:
    bank = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    queries = torch.tensor([[0.0, 1.0]])
    assert knn_distances(queries, bank, 1).tolist() == [1.0]
    assert knn_distances(queries, bank, 2).item() == pytest.approx(math.sqrt(9 + 9))
    assert knn_distances(bank, bank, 1, exclude_self=True).tolist() == [5.0, 5.0, 5.0]
    assert mean_pairwise_distance(bank) == pytest.approx((5 + 10 + 5) / 3)
    assert mean_pairwise_distance(bank[:1]) is None
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected = (0.0 + 2 * (1 / math.sqrt(2))) / 3  # pairs: (0,1)=0, (0,2)=(1,2)=1/√2
    assert mean_pairwise_cosine(features) == pytest.approx(expected)


class Fixed(nn.Module):
    """Logits = 10 · (mean of the left half, mean of the right half); features = itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = x[:, :, :, :2].mean(dim=(1, 2, 3))
        right = x[:, :, :, 2:].mean(dim=(1, 2, 3))
        return 10 * torch.stack([left, right], dim=1)


def test_compute_metrics_hand_computed() -> None:
    classifier = LoadedClassifier(Fixed(), (1, 1, 4), ("left", "right"))
    ones_left = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    ones_right = torch.tensor([[[[0.0, 0.0, 1.0, 1.0]]]])
    half = torch.full((1, 1, 1, 4), 0.5)
    images = torch.cat([ones_left, half, ones_right])  # targets 0, 0, 1
    targets = torch.tensor([0, 0, 1])
    p_strong = 1 / (1 + math.exp(-10))  # softmax of (10, 0)

    reference = torch.cat([half, half * 0.8, ones_left * 0.2])
    result = compute_metrics(
        classifier,
        images,
        targets,
        reference,
        torch.tensor([0, 1, 0]),
        Cost(train_seconds=1.5, steps=3),
        knn_k=1,
    )
    metrics = result.metrics
    left = metrics.per_class["left"]
    assert left.count == 2
    assert left.mean_confidence == pytest.approx((p_strong + 0.5) / 2)
    assert left.confident_share == 0.5
    assert left.argmax_accuracy == 1.0  # the ambiguous one: a tie → argmax 0 = its target
    assert metrics.overall.argmax_accuracy == 1.0
    assert metrics.overall.confident_share == pytest.approx(2 / 3)
    # nearest reference images: ones_left → half at 1 (0.8·half: √1.04, 0.2·ones_left:
    # 0.8·√2); half → half at 0.
    assert left.nn_distance == pytest.approx((1.0 + 0.0) / 2)
    assert left.pixel_diversity == pytest.approx(1.0)  # ‖ones_left − half‖ = √(4·0.25)
    assert metrics.per_class["right"].pixel_diversity is None
    assert metrics.overall.pixel_diversity == pytest.approx(1.0)  # mean over classes with pairs
    # MSP of counterfeits [p, 0.5, p] vs reference [0.5, 0.5, softmax(0.2·10, 0)]
    msp_fake = [p_strong, 0.5, p_strong]
    msp_real = [0.5, 0.5, 1 / (1 + math.exp(-2))]
    assert metrics.overall.msp_auroc == pytest.approx(
        auroc([-m for m in msp_fake], [-m for m in msp_real])
    )
    data = json.loads(metrics.model_dump_json())
    assert data["cost"]["train_seconds"] == 1.5
    assert data["per_class"]["right"]["pixel_diversity"] is None
    assert InversionMetrics.model_validate(data) == metrics
    assert result.counterfeit_outputs.logits.shape == (3, 2)
    assert result.reference_outputs is not None


def test_metrics_flag_collapsed_classes_and_work_without_reference() -> None:
    classifier = LoadedClassifier(Fixed(), (1, 1, 4), ("left", "right"))
    same = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]]).repeat(5, 1, 1, 1)
    varied = torch.rand(5, 1, 1, 4, generator=torch.Generator().manual_seed(0))
    metrics = compute_metrics(
        classifier, torch.cat([same, varied]), torch.tensor([0] * 5 + [1] * 5)
    ).metrics
    assert metrics.collapsed_classes == ["left"]
    assert metrics.overall.msp_auroc is None
    assert metrics.overall.nn_distance is None
    json.loads(metrics.model_dump_json())


def test_score_samples_records() -> None:
    classifier = LoadedClassifier(Fixed(), (1, 1, 4), ("left", "right"))
    images = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]], [[[1.0, 1.0, 0.0, 0.0]]]])
    scores = score_samples(torch.tensor([0, 1]), classifier_outputs(classifier, images), top_k=5)
    assert [s.predicted for s in scores] == [0, 0]
    assert scores[0].confidence == pytest.approx(1 / (1 + math.exp(-10)))
    assert scores[1].confidence == pytest.approx(1 / (1 + math.exp(10)), rel=1e-4)
    assert scores[1].target == 1
    assert len(scores[1].top_k) == 2
    assert scores[1].top_k[0][0] == 0  # "left", the most probable class, first
    assert SampleIndex.validate_json(SampleIndex.dump_json(scores)) == scores


def test_png_is_lossless_8bit() -> None:
    image = torch.arange(3 * 4 * 5, dtype=torch.float32).reshape(3, 4, 5) / 59
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image))))
    assert decoded.shape == (4, 5, 3)
    assert decoded.dtype == np.uint8
    expected = np.clip(np.rint(image.permute(1, 2, 0).numpy() * 255), 0, 255)
    assert np.array_equal(decoded, expected)
    grey = np.asarray(Image.open(io.BytesIO(png_bytes(torch.zeros(1, 6, 7)))))
    assert grey.shape == (6, 7)


def test_grid_has_one_row_per_class() -> None:
    images = torch.rand(7, 1, 5, 6)
    labels = [2, 0, 2, 1, 0, 2, 2]
    array = grid_array(images, labels, pad=1)
    assert array.shape == (3 * 6 + 1, 4 * 7 + 1)
    assert array.shape == np.asarray(Image.open(io.BytesIO(grid_png(images, labels, pad=1)))).shape
    assert grid_array(images, labels, per_row=2, pad=1).shape == (19, 2 * 7 + 1)


def test_a_run_is_measured_a_class_at_a_time_with_bounded_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The audit adds one class of images at a time, in any order; the figures are those of
    the whole set, and a class's pairwise figures use at most FIGURE_SAMPLE of its samples."""
    import models.metrics as metrics_module

    classifier = LoadedClassifier(Fixed(), (1, 1, 4), ("left", "right"))
    rng = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 1, 4, generator=rng)
    targets = torch.tensor([0, 1] * 6)
    reference = torch.rand(6, 1, 1, 4, generator=rng)
    whole = compute_metrics(classifier, images, targets, reference, torch.tensor([0, 1] * 3))
    builder = metrics_module.MetricsBuilder(classifier, reference, torch.tensor([0, 1] * 3))
    for k in (1, 0):  # the other order
        at = torch.nonzero(targets == k).flatten()
        builder.add_class(k, images[at], at)
    assert builder.finish().metrics == whole.metrics
    monkeypatch.setattr(metrics_module, "FIGURE_SAMPLE", 3)
    bounded = compute_metrics(classifier, images, targets).metrics
    first_three_left = images[targets == 0][:3]
    assert bounded.per_class["left"].pixel_diversity == pytest.approx(
        mean_pairwise_distance(first_three_left)
    )
