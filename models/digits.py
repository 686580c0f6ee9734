"""scikit-learn's handwritten digits as a small stand-in for MNIST, and quick classifier training.

The 8x8 digits (values 0..16) are resized bilinearly to any (C, H, W) and scaled to [0, 1];
for C > 1 the grey image is tiled into every channel. Variants for the classifier zoo
(`load_digits_variant`): grey at any size, tinted RGB (a random foreground and background
colour per image, so a generator must produce colour), and pairs of digits side by side
(100 classes, composed from split-disjoint single digits). Everything is made at run time from
the 1,797 digits that ship with scikit-learn; nothing is downloaded. Tests, the demo and the
benchmarks train their classifiers here, so this is the only module of `models/` that imports
scikit-learn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.architectures import build_architecture

__all__ = [
    "DIGIT_VARIANTS",
    "DigitsData",
    "TrainedClassifier",
    "load_digit_pairs",
    "load_digits_data",
    "load_digits_variant",
    "load_tinted_digits",
    "train_classifier",
]

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


def load_tinted_digits(
    input_shape: Sequence[int] = (3, 32, 32), held_out: float = 0.3, seed: int = 0
) -> DigitsData:
    """RGB digits, each image with its own random stroke and background colour.

    x = background + (foreground − background) · digit, foreground channels in [0.35, 1],
    background channels in [0, 0.25]: colour carries no class information, so a classifier
    learns to read the shape in colour, and a generator has to produce colour images.
    """
    channels, height, width = (int(d) for d in input_shape)
    grey = load_digits_data((1, height, width), held_out, seed)
    rng = torch.Generator().manual_seed(seed + 7919)

    def tint(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        foreground = 0.35 + 0.65 * torch.rand(n, channels, 1, 1, generator=rng)
        background = 0.25 * torch.rand(n, channels, 1, 1, generator=rng)
        return (background + (foreground - background) * x).clamp(0.0, 1.0)  # (n, C, H, W)

    return DigitsData(tint(grey.train_x), grey.train_y, tint(grey.test_x), grey.test_y)


def load_digit_pairs(
    input_shape: Sequence[int] = (1, 28, 56),
    held_out: float = 0.3,
    seed: int = 0,
    train_per_class: int = 60,
    test_per_class: int = 20,
) -> DigitsData:
    """Two digits side by side: class 10·a + b for digit a on the left and b on the right.

    Single digits are split first (stratified, as `load_digits_data`); training pairs are
    composed only from training digits and held-out pairs only from held-out digits, so no
    digit image is shared between the splits. Each half is (C, H, W/2).
    """
    channels, height, width = (int(d) for d in input_shape)
    if width % 2:
        raise ValueError("pairs need an even width (two halves)")
    single = load_digits_data((channels, height, width // 2), held_out, seed)
    rng = torch.Generator().manual_seed(seed + 104729)

    def compose(x: torch.Tensor, y: torch.Tensor, per_class: int) -> tuple[torch.Tensor, ...]:
        by_digit = [torch.nonzero(y == d).flatten() for d in range(10)]
        images, labels = [], []
        for left in range(10):
            for right in range(10):
                a = by_digit[left][torch.randint(len(by_digit[left]), (per_class,), generator=rng)]
                b = by_digit[right][
                    torch.randint(len(by_digit[right]), (per_class,), generator=rng)
                ]
                images.append(torch.cat([x[a], x[b]], dim=3))  # (per_class, C, H, W)
                labels.append(torch.full((per_class,), 10 * left + right, dtype=torch.int64))
        return torch.cat(images), torch.cat(labels)

    train_x, train_y = compose(single.train_x, single.train_y, train_per_class)
    test_x, test_y = compose(single.test_x, single.test_y, test_per_class)
    names = tuple(f"{a}{b}" for a in range(10) for b in range(10))
    return DigitsData(train_x, train_y, test_x, test_y, class_names=names)


def _grey(shape: Sequence[int], held_out: float, seed: int) -> DigitsData:
    return load_digits_data(shape, held_out, seed)


DIGIT_VARIANTS: dict[str, Any] = {
    "grey": _grey,  # (1, 28, 28) by default: any shape, grey tiled into every channel
    "tinted": load_tinted_digits,  # (3, 32, 32), (3, 32, 40), ...: random colours per image
    "pairs": load_digit_pairs,  # (1, 28, 56): 100 classes, two digits side by side
}


def load_digits_variant(
    variant: str,
    input_shape: Sequence[int],
    *,
    classes: int | None = None,
    held_out: float = 0.3,
    seed: int = 0,
) -> DigitsData:
    """A named variant (`DIGIT_VARIANTS`) at `input_shape`; `classes`: keep digits 0..classes−1."""
    try:
        loader = DIGIT_VARIANTS[variant]
    except KeyError:
        raise ValueError(
            f"unknown digits variant {variant!r}: use one of {', '.join(DIGIT_VARIANTS)}"
        ) from None
    data: DigitsData = loader(tuple(int(d) for d in input_shape), held_out, seed)
    if classes is None or classes >= len(data.class_names):
        return data
    if classes < 2:
        raise ValueError("keep at least 2 classes")
    train, test = data.train_y < classes, data.test_y < classes
    return DigitsData(
        data.train_x[train],
        data.train_y[train],
        data.test_x[test],
        data.test_y[test],
        class_names=data.class_names[:classes],
    )


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
    on_epoch: Callable[[int, int], None] | None = None,
) -> TrainedClassifier:
    """Train a registered architecture on the digits with Adam (one-pixel shift augmentation);
    `on_epoch(done, epochs)` after each epoch (progress)."""
    data = data if data is not None else load_digits_data()
    config = dict(config or {})
    torch.manual_seed(seed)
    model = build_architecture(architecture, data.input_shape, len(data.class_names), **config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    n = len(data.train_y)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=rng)
        for first in range(0, n, batch_size):
            idx = order[first : first + batch_size]
            x = _shift(data.train_x[idx], rng)
            loss = F.cross_entropy(model(x), data.train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs)
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
