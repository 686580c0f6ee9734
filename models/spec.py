"""What a user declares about an uploaded classifier, and the error shown when it is refused.

A `ClassifierSpec` travels as JSON between the service and the worker, so it round-trips through
`to_dict()` / `from_dict()`. Validation happens at construction: a spec that exists is sane.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["MAX_CLASSES", "ClassifierFormat", "ClassifierRejected", "ClassifierSpec"]

ClassifierFormat = Literal["safetensors", "onnx"]
FORMATS: tuple[ClassifierFormat, ...] = ("safetensors", "onnx")

MAX_CLASSES = 1000  # hot conditioning planes grow with K: beyond this a job would not fit
MAX_CHANNELS = 4
MIN_SIDE, MAX_SIDE = 4, 512


class ClassifierRejected(ValueError):
    """A classifier (or its declaration) cannot be inverted.

    The message is shown to users verbatim: it says what is wrong and what to do about it.
    """


@dataclass(frozen=True)
class ClassifierSpec:
    """The declaration that comes with an uploaded classifier."""

    format: ClassifierFormat  # "safetensors" (weights + a registered architecture) or "onnx"
    input_shape: tuple[int, int, int]  # (channels, height, width) of one input image
    class_names: tuple[str, ...]  # one name per output logit, in output order
    mean: tuple[float, ...] = (0.0,)  # per-channel (or one shared) normalisation mean ...
    std: tuple[float, ...] = (1.0,)  # ... and std, applied inside: x_model = (x - mean) / std
    architecture: str | None = None  # registered architecture name (safetensors only)
    architecture_config: dict[str, Any] = field(default_factory=dict)  # its keyword config

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ClassifierRejected(
                f"unknown classifier format {self.format!r}: use one of {', '.join(FORMATS)}"
            )
        shape = tuple(self.input_shape)
        if len(shape) != 3 or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise ClassifierRejected(
                f"input_shape must be three integers (channels, height, width), got {shape!r}"
            )
        channels, height, width = shape
        if not 1 <= channels <= MAX_CHANNELS:
            raise ClassifierRejected(
                f"input_shape has {channels} channels: images must have 1 to {MAX_CHANNELS}"
            )
        if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise ClassifierRejected(
                f"input_shape {height}x{width} is outside the supported {MIN_SIDE}..{MAX_SIDE} "
                "pixels per side"
            )
        names = tuple(str(n) for n in self.class_names)
        if not 2 <= len(names) <= MAX_CLASSES:
            raise ClassifierRejected(
                f"declare between 2 and {MAX_CLASSES} class names, got {len(names)}"
            )
        if len(set(names)) != len(names):
            raise ClassifierRejected("class names must be unique")
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        for label, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise ClassifierRejected(
                    f"{label} has {len(values)} values: give 1 or one per channel ({channels})"
                )
            if not all(math.isfinite(v) for v in values):
                raise ClassifierRejected(f"{label} must be finite numbers")
        if any(s <= 0 for s in std):
            raise ClassifierRejected("std values must be positive")
        if self.format == "safetensors" and not self.architecture:
            raise ClassifierRejected(
                "safetensors files hold only weights: name the architecture they belong to "
                "(see the list of registered architectures)"
            )
        if not isinstance(self.architecture_config, Mapping):
            raise ClassifierRejected("architecture_config must be a JSON object")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "architecture_config", dict(self.architecture_config))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "architecture": self.architecture,
            "architecture_config": dict(self.architecture_config),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifierSpec:
        known = {
            "format",
            "input_shape",
            "class_names",
            "mean",
            "std",
            "architecture",
            "architecture_config",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ClassifierRejected(f"unknown classifier spec field {unknown[0]!r}")
        for required in ("format", "input_shape", "class_names"):
            if required not in data:
                raise ClassifierRejected(f"classifier spec is missing {required!r}")
        return cls(
            format=data["format"],
            input_shape=tuple(data["input_shape"]),
            class_names=tuple(data["class_names"]),
            mean=tuple(data.get("mean", (0.0,))),
            std=tuple(data.get("std", (1.0,))),
            architecture=data.get("architecture"),
            architecture_config=dict(data.get("architecture_config") or {}),
        )
