"""Fixtures shared by the engine's tests: one small classifier and real digits to compare."""

from __future__ import annotations

import pytest
import torch

from models.classifier import LoadedClassifier
from tests import factories


@pytest.fixture(scope="module")
def classifier() -> LoadedClassifier:
    """An MLP trained on scikit-learn's digits at 1x28x28 (cached by `tests.factories`)."""
    return factories.loaded("mlp", (1, 28, 28))


@pytest.fixture(scope="module")
def real() -> tuple[torch.Tensor, torch.Tensor]:
    """200 held-out digits and their labels: a reference set."""
    data = factories.digits((1, 28, 28))
    return data.test_x[:200], data.test_y[:200]
