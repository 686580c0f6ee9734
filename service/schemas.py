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

# The engine's limits (models.spec), repeated here because the API does not import the engine;
# tests/service/test_contract.py checks that they agree.
MAX_CLASSES = 1000
MAX_CHANNELS = 4
MIN_SIDE, MAX_SIDE = 4, 512

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


class FormModel(BaseModel):
    """Metadata sent as multipart form fields: a field left blank takes its default."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data


class ClassifierCreate(FormModel):
    """Metadata sent as form fields beside the model file."""

    name: Name
    format: Literal["safetensors", "onnx"]
    input_shape: Annotated[tuple[int, int, int], ShapeList] = Field(
        description="C×H×W, e.g. `1,28,28`"
    )
    class_names: Annotated[list[Name], CommaList] = Field(min_length=2, max_length=MAX_CLASSES)
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
        if not (1 <= c <= MAX_CHANNELS and min(h, w) >= MIN_SIDE and max(h, w) <= MAX_SIDE):
            raise ValueError(f"expected C in 1..{MAX_CHANNELS} and H, W in {MIN_SIDE}..{MAX_SIDE}")
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


class DatasetCreate(FormModel):
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


# --- inversion jobs ------------------------------------------------------------------------


class LossWeightsIn(BaseModel):
    """Weights of the loss terms (names as in the paper); omitted ones take the method's preset."""

    model_config = ConfigDict(extra="forbid")

    kl: float | None = Field(None, ge=0, le=100, description="KL(c ‖ softmax)")
    ce: float | None = Field(None, ge=0, le=100, description="cross-entropy with the label")
    cosine: float | None = Field(None, ge=0, le=100, description="pairwise feature cosine")
    orthogonality: float | None = Field(None, ge=0, le=100, description="feature orthogonality")
    tv: float | None = Field(None, ge=0, le=100, description="total-variation image prior")
    mode_seeking: float | None = Field(
        None, ge=0, le=100, description="mode-seeking term (MSGAN): against collapsed classes"
    )


Method = Literal["c3", "soft", "pixel"]


class InversionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classifier_id: str = Field(max_length=64)
    method: Method = Field("c3", description="`c3` (default), `soft` or `pixel` (baselines)")
    classes: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, min_length=1, description="Class indices to invert; all when omitted."
    )
    samples_per_class: int = Field(100, ge=1)
    steps: int | None = Field(
        None,
        ge=1,
        description="Training budget: generator steps (c3, soft) or per-sample "
        "optimisation steps (pixel). Method default when omitted.",
    )
    batch_size: int | None = Field(None, ge=2)
    loss_weights: LossWeightsIn | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Random when omitted.")
    dataset_id: str | None = Field(
        None, max_length=64, description="Reference set for the distinctness metrics."
    )
    sample_dropout: bool = Field(
        False, description="Sample with the generator's dropout on: more variety, less confidence."
    )

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError("class indices must be unique")
        return classes


class SamplingCreate(BaseModel):
    """More samples from a finished job's trained generator, without retraining."""

    model_config = ConfigDict(extra="forbid")

    samples_per_class: int = Field(100, ge=1)
    classes: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    sample_dropout: bool | None = None


class ProgressPublic(BaseModel):
    phase: str = Field(description="`loading`, `training`, `sampling`, `metrics` or `saving`")
    step: int
    total_steps: int
    fraction: float
    losses: dict[str, float]
    confident_share: float | None = Field(
        None, description="Share of the latest training batch classified at p ≥ 0.99."
    )
    steps_per_second: float | None = None
    eta_seconds: float | None = None
    updated_at: float


class InversionPublic(BaseModel):
    id: str
    kind: Literal["inversion", "sampling"]
    parent_id: str | None = None
    classifier_id: str
    dataset_id: str | None
    method: Method
    params: dict[str, Any]
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    cancel_requested: bool
    progress: ProgressPublic | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: ErrorPublic | None
    metrics: dict[str, Any] | None = Field(None, description="Overall figures once succeeded.")
    sample_count: int | None = None
    checkpoint_step: int | None = Field(None, description="Step of the latest checkpoint.")
    resumed_from_step: int | None = Field(
        None, description="Step the current (or last) attempt started from: > 0 after a resume."
    )
    steps_this_attempt: int | None = Field(None, description="Training steps the last attempt ran.")
    engine_seconds: float | None = Field(
        None, description="Time spent in the inversion engine (the rest is service overhead)."
    )
    links: dict[str, str]


class InversionsPublic(BaseModel):
    data: list[InversionPublic]
    count: int


class TopKPublic(BaseModel):
    class_index: int
    class_name: str
    probability: float


class SamplePublic(BaseModel):
    index: int
    target: int
    target_name: str
    predicted: int
    predicted_name: str
    confidence: float = Field(description="The classifier's probability of the target class.")
    top_k: list[TopKPublic]
    image_url: str


class SamplesPublic(BaseModel):
    data: list[SamplePublic]
    count: int
