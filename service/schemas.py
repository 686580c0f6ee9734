"""Request and response schemas: `XCreate` in, `XPublic` out, `XsPublic(data, count)` lists."""

from __future__ import annotations

import json
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

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


def _split(value: Any, separators: str) -> Any:
    """Form fields arrive as text: accept a JSON list or a separated list ("1,28,28")."""
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


class HealthPublic(BaseModel):
    status: str


class ReadinessPublic(BaseModel):
    status: str
    checks: dict[str, str]


class ErrorPublic(BaseModel):
    title: str
    detail: str


# --- classifiers ---------------------------------------------------------------------------


class ClassifierCreate(BaseModel):
    """Metadata sent as form fields beside the model file."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    format: Literal["safetensors", "onnx"]
    input_shape: Annotated[tuple[int, int, int], ShapeList] = Field(
        description="C×H×W, e.g. `1,28,28`"
    )
    class_names: Annotated[list[Name], CommaList] = Field(min_length=2, max_length=10_000)
    mean: Annotated[list[float], CommaList] = Field(default_factory=lambda: [0.0])
    std: Annotated[list[float], CommaList] = Field(default_factory=lambda: [1.0])
    architecture: Annotated[str, StringConstraints(max_length=64)] | None = None
    architecture_config: Annotated[dict[str, Any], BeforeValidator(_json_object)] = Field(
        default_factory=dict
    )
    description: Annotated[str, StringConstraints(max_length=5_000)] = ""
    tags: Annotated[list[Tag], CommaList] = Field(default_factory=list, max_length=32)

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        if not (1 <= c <= 16 and 1 <= h <= 1024 and 1 <= w <= 1024):
            raise ValueError("expected C in 1..16 and H, W in 1..1024")
        return shape

    @field_validator("class_names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return names

    @field_validator("std")
    @classmethod
    def _positive(cls, std: list[float]) -> list[float]:
        if any(s <= 0 for s in std):
            raise ValueError("every std must be positive")
        return std

    @model_validator(mode="after")
    def _consistent(self) -> ClassifierCreate:
        channels = self.input_shape[0]
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, channels):
                raise ValueError(f"{name}: give 1 value or {channels} (one per channel)")
        if self.format == "safetensors" and not self.architecture:
            raise ValueError(
                "architecture: safetensors weights need the name of a registered architecture"
            )
        return self


class ClassifierPublic(BaseModel):
    id: str
    name: str
    description: str
    tags: list[str]
    format: str
    architecture: str | None
    architecture_config: dict[str, Any]
    input_shape: tuple[int, int, int]
    class_names: list[str]
    num_classes: int
    mean: list[float]
    std: list[float]
    status: Literal["validating", "ready", "rejected"]
    reason: str | None = Field(None, description="Why the upload was rejected, if it was.")
    sha256: str
    size_bytes: int
    param_count: int | None = None
    forward_latency_ms: float | None = None
    created_at: float
    validated_at: float | None = None
    links: dict[str, str]


class ClassifiersPublic(BaseModel):
    data: list[ClassifierPublic]
    count: int


# --- datasets ------------------------------------------------------------------------------


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    format: Literal["npz", "png-zip"] | None = Field(
        None, description="`npz` or `png-zip`; inferred from the file name when omitted."
    )
    description: Annotated[str, StringConstraints(max_length=5_000)] = ""
    tags: Annotated[list[Tag], CommaList] = Field(default_factory=list, max_length=32)


class DatasetPublic(BaseModel):
    id: str
    name: str
    description: str
    tags: list[str]
    format: str
    status: Literal["validating", "ready", "rejected"]
    reason: str | None = None
    sha256: str
    size_bytes: int
    count: int | None = None
    input_shape: tuple[int, int, int] | None = None
    has_labels: bool | None = None
    created_at: float
    validated_at: float | None = None
    links: dict[str, str]


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
