"""scikit-learn's handwritten digits as a small stand-in for MNIST, and quick classifier training.

The 8x8 digits (values 0..16) are resized bilinearly to any (C, H, W) and scaled to [0, 1];
for C > 1 the grey image is tiled into every channel. Tests, the demo and the benchmark train
their classifiers here, so this is the only module of `models/` that imports scikit-learn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.architectures import build_architecture

__all__ = ["DigitsData", "TrainedClassifier", "load_digits_data", "train_classifier"]

logger = logging.getLogger(__name__)

DIGIT_NAMES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DigitsData:
    """A stratified split of the digits; images (n, C, H, W) float32 in [0, 1], labels int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor  # the held-out split: the reference set of real images
    test_y: torch.Tensor
    class_names: tuple[str, ...] = DIGIT_NAMES

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)


def load_digits_data(
    input_shape: Sequence[int] = (1, 28, 28), held_out: float = 0.3, seed: int = 0
) -> DigitsData:
    """Load, resize and split the 1,797 digits (held_out share stratified by class)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    channels, height, width = (int(d) for d in input_shape)
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (n,1,8,8)
    images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    images = images.clamp(0.0, 1.0).repeat(1, channels, 1, 1).contiguous()  # (n, C, H, W)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=held_out, random_state=seed, stratify=digits.target
    )
    train_i, test_i = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return DigitsData(images[train_i], labels[train_i], images[test_i], labels[test_i])


@dataclass
class TrainedClassifier:
    model: nn.Module  # in eval mode; expects [0, 1] pixels (mean 0, std 1)
    architecture: str
    config: dict[str, Any] = field(default_factory=dict)
    accuracy: float = 0.0  # on the held-out split
    seconds: float = 0.0


def train_classifier(
    architecture: str = "paper-cnn",
    data: DigitsData | None = None,
    *,
    epochs: int = 25,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> TrainedClassifier:
    """Train a registered architecture on the digits with Adam (one-pixel shift augmentation)."""
    data = data if data is not None else load_digits_data()
    config = dict(config or {})
    torch.manual_seed(seed)
    model = build_architecture(architecture, data.input_shape, len(data.class_names), **config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    n = len(data.train_y)
    for _ in range(epochs):
        order = torch.randperm(n, generator=rng)
        for first in range(0, n, batch_size):
            idx = order[first : first + batch_size]
            x = _shift(data.train_x[idx], rng)
            loss = F.cross_entropy(model(x), data.train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(data.test_x).argmax(1) == data.test_y).float().mean().item()
    logger.info(
        "trained %s: %.1f%% held-out accuracy in %.1fs", architecture, 100 * accuracy, seconds
    )
    return TrainedClassifier(model, architecture, config, accuracy, seconds)


def _shift(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Roll the whole batch by up to one pixel in each direction (cheap augmentation)."""
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=rng))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))
