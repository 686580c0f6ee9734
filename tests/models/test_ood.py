"""The OOD-detector evasion table against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from models.ood import detector_scores, evasion_table, keep_threshold


def test_threshold_keeps_95_percent_of_real_inputs() -> None:
    scores = torch.arange(1.0, 21.0)  # 20 scores: reject floor(0.05 * 20) = 1, the lowest
    assert keep_threshold(scores, 0.95) == 2.0
    assert float((scores >= 2.0).double().mean()) == 0.95
    assert keep_threshold(torch.arange(1.0, 11.0), 0.95) == 1.0  # 10 scores: reject none


def test_mahalanobis_and_knn_scores_by_hand() -> None:
    fit = torch.tensor([[-1.0], [1.0], [9.0], [11.0]])  # class means 0 and 10, variance 1
    labels = torch.tensor([0, 0, 1, 1])
    scores = detector_scores(torch.zeros(1, 2), torch.tensor([[2.0]]), fit, labels)
    # tied variance 1 plus the ridge 1e-3 * mean variance: distance to mean 0 = 4 / 1.001
    assert scores["mahalanobis"].item() == pytest.approx(-4 / 1.001)
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    knn = detector_scores(
        torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), bank, torch.tensor([0, 1, 0]), k=2
    )["knn"]
    # distances to the normalised bank: 0, sqrt(2), |(1,0) - (1,1)/sqrt 2| = 0.7654; 2nd nearest
    assert knn.item() == pytest.approx(-math.sqrt((1 - 1 / math.sqrt(2)) ** 2 + 0.5))
    # energy = logsumexp, max-softmax = 0.5 for equal logits
    assert scores["energy"].item() == pytest.approx(math.log(2))
    assert scores["max-softmax"].item() == pytest.approx(0.5)


def test_evasion_table_by_hand() -> None:
    # Every real input has logits (2, 0) and feature (1, 0): every real score is the same, so
    # each threshold is that score whatever the fit/held-out split.
    ref_logits = torch.tensor([[2.0, 0.0]]).repeat(8, 1)
    ref_features = torch.tensor([[1.0, 0.0]]).repeat(8, 1)
    fake_logits = torch.tensor([[5.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    fake_features = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    results, n_fit, n_eval = evasion_table(ref_logits, ref_features, fake_logits, fake_features)
    assert (n_fit, n_eval) == (4, 4)
    table = {r.name: r for r in results}
    # max-softmax: real e²/(e²+1) = 0.8808; fakes 0.9933 (accepted), 0.8808 (tie: accepted), 0.5
    assert table["max-softmax"].threshold == pytest.approx(math.exp(2) / (math.exp(2) + 1))
    assert table["max-softmax"].accepted_share == pytest.approx(2 / 3)
    # AUROC: real vs 0.9933 -> 0, vs the tie -> 0.5, vs 0.5 -> 1: mean 0.5
    assert table["max-softmax"].auroc == pytest.approx(0.5)
    assert table["energy"].threshold == pytest.approx(math.log(math.exp(2) + 1))
    assert table["energy"].accepted_share == pytest.approx(2 / 3)
    # knn: (2, 0) normalises onto the real direction (accepted), (1, 0) too, (0, 1) does not
    assert table["knn"].accepted_share == pytest.approx(2 / 3)
    assert table["knn"].auroc == pytest.approx((0.5 + 0.5 + 1) / 3)
    # mahalanobis: only the exact real feature has distance 0
    assert table["mahalanobis"].accepted_share == pytest.approx(1 / 3)
    assert table["mahalanobis"].auroc == pytest.approx((1 + 0.5 + 1) / 3)


def test_evasion_table_needs_a_reference() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        evasion_table(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(1, 2), torch.zeros(1, 2))
