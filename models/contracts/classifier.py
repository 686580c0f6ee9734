"""What a user declares about an uploaded classifier, its limits, and the refusal users see.

`ClassifierSpec` is validated where it is made (API form, `c3 invert` options, a stored
record), so the engine only ever receives a sane declaration. Lists also arrive as text from
forms and the command line: "1,28,28", "1x28x28", "cat, dog" or a JSON list are accepted.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "MAX_SIDE",
    "MIN_SIDE",
    "ClassifierFormat",
    "ClassifierRejected",
    "ClassifierSpec",
    "CommaList",
    "JsonObject",
    "Name",
]

ClassifierFormat = Literal["safetensors", "onnx"]

MAX_CLASSES = 1000  # hot conditioning planes grow with K: beyond this a job would not fit
MAX_CHANNELS = 4
MIN_SIDE, MAX_SIDE = 4, 512


class ClassifierRejected(ValueError):
    """A classifier (or its declaration) cannot be inverted.

    The message is shown to users verbatim: it says what is wrong and what to do about it.
    """


def _split(value: Any, separators: str) -> Any:
    """A JSON list, or text separated by `separators`, as a list; anything else unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list: {exc.msg}") from exc
    return [part.strip() for part in re.split(separators, text) if part.strip()]


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc.msg}") from exc
    return value


CommaList = BeforeValidator(lambda v: _split(v, r","))
ShapeList = BeforeValidator(lambda v: _split(v, r"[,x×]"))
JsonObject = BeforeValidator(_json_object)
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ClassifierSpec(BaseModel):
    """The declaration that comes with an uploaded classifier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: ClassifierFormat = Field(
        description="`safetensors` (weights of a registered architecture) or `onnx`"
    )
    input_shape: Annotated[tuple[int, int, int], ShapeList] = Field(
        description="C×H×W of one input image, e.g. `1,28,28`"
    )
    class_names: Annotated[tuple[Name, ...], CommaList] = Field(
        min_length=2, max_length=MAX_CLASSES, description="One name per output logit, in order."
    )
    mean: Annotated[tuple[float, ...], CommaList] = Field(
        (0.0,), description="Normalisation mean, one value or one per channel."
    )
    std: Annotated[tuple[float, ...], CommaList] = Field(
        (1.0,), description="Normalisation std: the model sees (x − mean) / std of [0, 1] pixels."
    )
    architecture: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="Registered architecture of a safetensors file."
    )
    architecture_config: Annotated[dict[str, Any], JsonObject] = Field(
        default_factory=dict, description="Keyword configuration of the architecture (JSON)."
    )

    @field_validator("input_shape")
    @classmethod
    def _supported_shape(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        channels, height, width = shape
        if not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(
                f"input_shape has {channels} channels: images must have 1 to {MAX_CHANNELS}"
            )
        if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise ValueError(
                f"input_shape {height}x{width} is outside the supported {MIN_SIDE}..{MAX_SIDE} "
                "pixels per side"
            )
        return shape

    @field_validator("class_names")
    @classmethod
    def _unique(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return names

    @field_validator("std")
    @classmethod
    def _positive(cls, std: tuple[float, ...]) -> tuple[float, ...]:
        if any(not s > 0 for s in std):
            raise ValueError("std values must be positive")
        return std

    @model_validator(mode="after")
    def _consistent(self) -> ClassifierSpec:
        channels = self.input_shape[0]
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(
                    f"{label} has {len(values)} values: give 1 or one per channel ({channels})"
                )
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{label} must be finite numbers")
        if self.format == "safetensors" and not self.architecture:
            raise ValueError(
                "safetensors files hold only weights: name the architecture they belong to "
                "(see the list of registered architectures)"
            )
        return self

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
