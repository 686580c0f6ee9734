"""Classifier architectures a safetensors upload can name, registered by name.

Each builder takes the declared input shape (C, H, W), the number of classes and a small
keyword config (JSON-safe values), and returns an untrained `nn.Module` mapping normalised
images (n, C, H, W) to logits (n, K). The feature layer used by the diversity losses is the
input of each network's last `nn.Linear`, found by hooks at load time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ARCHITECTURES",
    "build_architecture",
    "list_architectures",
    "register_architecture",
]

Builder = Callable[..., nn.Module]
ARCHITECTURES: dict[str, Builder] = {}


def register_architecture(name: str) -> Callable[[Builder], Builder]:
    """Register `builder(input_shape, num_classes, **config)` under `name`."""

    def decorate(builder: Builder) -> Builder:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        ARCHITECTURES[name] = builder
        return builder

    return decorate


def list_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def architecture_defaults(name: str) -> dict[str, Any]:
    """The config keys an architecture accepts, with their defaults (for docs and forms)."""
    builder = _builder(name)
    params = list(inspect.signature(builder).parameters.values())[2:]
    return {p.name: p.default for p in params}


def build_architecture(
    name: str, input_shape: Sequence[int], num_classes: int, **config: Any
) -> nn.Module:
    """Build a registered architecture; unknown names or config keys raise `ValueError`."""
    builder = _builder(name)
    accepted = architecture_defaults(name)
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ValueError(
            f"architecture {name!r} has no config key {unknown[0]!r} "
            f"(accepted: {', '.join(sorted(accepted)) or 'none'})"
        )
    channels, height, width = (int(d) for d in input_shape)
    if num_classes < 2:
        raise ValueError("a classifier needs at least 2 classes")
    return builder((channels, height, width), int(num_classes), **config)


def _builder(name: str) -> Builder:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}: registered are {', '.join(list_architectures())}"
        ) from None


class PaperCNN(nn.Module):
    """The paper's classifier: conv + LeakyReLU + max-pool twice, dropout, two FC layers.

    conv(c1) → LeakyReLU → pool → conv(c2) → LeakyReLU → pool → dropout → FC(hidden)
    → LeakyReLU → dropout → FC(K). The features are the input of the last FC layer.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: Sequence[int],
        hidden: int,
        dropout: Sequence[float],
        negative_slope: float,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        if h < 4 or w < 4:
            raise ValueError("paper-cnn needs inputs of at least 4x4 pixels")
        c1, c2 = (int(x) for x in channels)
        self.negative_slope = float(negative_slope)
        self.conv1 = nn.Conv2d(c, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.drop_conv = nn.Dropout(float(dropout[0]))
        self.fc1 = nn.Linear(c2 * (h // 4) * (w // 4), int(hidden))
        self.drop_fc = nn.Dropout(float(dropout[1]))
        self.fc2 = nn.Linear(int(hidden), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.leaky_relu(self.conv1(x), self.negative_slope), 2)  # (n, c1, h/2, w/2)
        x = F.max_pool2d(F.leaky_relu(self.conv2(x), self.negative_slope), 2)  # (n, c2, h/4, w/4)
        x = self.drop_conv(x).flatten(1)
        x = self.drop_fc(F.leaky_relu(self.fc1(x), self.negative_slope))  # (n, hidden)
        return self.fc2(x)  # (n, K)


@register_architecture("paper-cnn")
def paper_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    channels: Sequence[int] = (16, 32),  # the two conv layers' widths
    hidden: int = 128,  # width of the feature layer (input of the last FC)
    dropout: Sequence[float] = (0.25, 0.5),  # after the convs, after the hidden FC
    negative_slope: float = 0.2,  # LeakyReLU slope
) -> nn.Module:
    return PaperCNN(input_shape, num_classes, channels, hidden, dropout, negative_slope)


class MLP(nn.Module):
    """Flatten → (Linear → ReLU → dropout)* → Linear."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        hidden: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        width = input_shape[0] * input_shape[1] * input_shape[2]
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            layers += [nn.Linear(width, int(size)), nn.ReLU(), nn.Dropout(float(dropout))]
            width = int(size)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (n, K)


@register_architecture("mlp")
def mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    hidden: Sequence[int] = (256, 128),  # hidden layer widths
    dropout: float = 0.2,  # after each hidden layer
) -> nn.Module:
    return MLP(input_shape, num_classes, hidden, dropout)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A small residual net: stem, one stage of basic blocks per width, global average pool."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        widths: Sequence[int],
        blocks_per_stage: int,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for index in range(int(blocks_per_stage)):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (n, c, h', w')
        return self.fc(x.mean(dim=(2, 3)))  # (n, K)


@register_architecture("resnet-small")
def resnet_small(
    input_shape: tuple[int, int, int],
    num_classes: int,
    widths: Sequence[int] = (16, 32, 64),  # one stage per width, stride 2 between stages
    blocks_per_stage: int = 1,  # basic blocks in each stage
) -> nn.Module:
    return ResNetSmall(input_shape, num_classes, widths, blocks_per_stage)
