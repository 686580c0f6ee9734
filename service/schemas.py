"""Request and response schemas: `XCreate` in, `XPublic` out, `XsPublic(data, count)` lists.

Each extends its concept's base in `service.records` (which extends the engine's contracts),
so a field, its limits and its description are declared once for the engine, the store and
the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from models.contracts.inversion import ClassList, InversionParams, MethodName
from service.records import (
    ClassifierBase,
    ClassifierRecord,
    DatasetBase,
    DatasetFormat,
    DatasetRecord,
    JobBase,
    JobRecord,
    UploadState,
)


class FieldProblem(BaseModel):
    field: str | None = Field(None, description="The input at fault (dotted when nested).")
    detail: str


class ProblemPublic(BaseModel):
    """An error, as RFC 9457 problem details (`application/problem+json`). Some problems add
    members of their own (`id` of a rejected upload, `jobs` using a resource, a job's memory
    `estimate`)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="The kind of problem, e.g. `/problems/not-found`.")
    title: str
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What is wrong, and what to do about it.")
    instance: str = Field(description="The request's path.")
    field: str | None = Field(None, description="The input at fault, when there is one.")
    errors: list[FieldProblem] | None = Field(
        None, description="Every invalid input, when there are several."
    )


class HealthPublic(BaseModel):
    status: str


class ReadinessPublic(BaseModel):
    status: str
    checks: dict[str, str]


class ListPublic(BaseModel):
    """What every list has beside its items (service.paging)."""

    count: int = Field(description="Items matching the filters, over all pages.")
    next: str | None = Field(
        None, description="The next page (path and query), or null on the last page."
    )


class _Form(BaseModel):
    """Metadata sent as multipart form fields: a field left blank takes its default."""

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data


# --- classifiers ---------------------------------------------------------------------------


class ClassifierCreate(_Form, ClassifierBase):
    """Metadata sent as form fields beside the model file."""


class _UploadPublic(BaseModel):
    id: str
    status: UploadState
    reason: str | None = Field(None, description="Why the upload was rejected, if it was.")
    sha256: str
    size_bytes: int
    created_at: float
    validated_at: float | None = None
    links: dict[str, str]


class ClassifierPublic(ClassifierBase, _UploadPublic):
    param_count: int | None = None
    forward_latency_ms: float | None = None
    batch_norm_layers: int | None = Field(
        None,
        description="BatchNorm layers with running statistics: detector-aware c3 can build its "
        "prior from them without a reference set (an ONNX export folds them away: 0).",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def of(cls, record: ClassifierRecord) -> ClassifierPublic:
        links = {"self": f"/classifiers/{record.id}"}
        if record.state == UploadState.READY:
            links["file"] = f"/classifiers/{record.id}/file"
        return cls(
            **record.model_dump(include=set(cls.model_fields)),
            status=record.state,
            reason=record.error.detail if record.error else None,
            links=links,
        )


class ClassifiersPublic(ListPublic):
    data: list[ClassifierPublic]


# --- datasets ------------------------------------------------------------------------------


class DatasetCreate(_Form, DatasetBase):
    format: DatasetFormat | None = Field(
        None, description="`npz` or `png-zip`; inferred from the file name when omitted."
    )


class DatasetPublic(DatasetBase, _UploadPublic):
    format: DatasetFormat
    count: int | None = None
    input_shape: tuple[int, int, int] | None = None
    has_labels: bool | None = None

    @classmethod
    def of(cls, record: DatasetRecord) -> DatasetPublic:
        return cls(
            **record.model_dump(include=set(cls.model_fields)),
            status=record.state,
            reason=record.error.detail if record.error else None,
            links={"self": f"/datasets/{record.id}"},
        )


class DatasetsPublic(ListPublic):
    data: list[DatasetPublic]


# --- inversion jobs ------------------------------------------------------------------------


class InversionCreate(InversionParams):
    """Start an inversion job on a ready classifier."""

    classifier_id: str = Field(max_length=64)
    method: MethodName = Field("c3", description="`c3` (default), `soft` or `pixel` (baselines)")
    dataset_id: str | None = Field(
        None, max_length=64, description="Reference set for the distinctness metrics."
    )

    @field_validator("method")
    @classmethod
    def _detectors_need_c3(cls, method: str, info: ValidationInfo) -> str:
        """`detectors` comes first (InversionParams), so it is known here."""
        if info.data.get("detectors") and method != "c3":
            raise ValueError(
                f"only c3 is detector-aware, not {method}: use method c3 or leave out detectors"
            )
        return method


class SamplingCreate(BaseModel):
    """More samples from a finished job's trained generator, without retraining."""

    model_config = ConfigDict(extra="forbid")

    samples_per_class: int = Field(100, ge=1)
    classes: ClassList | None = Field(
        None, description="Classes to sample (of the trained ones); all trained when omitted."
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    sample_dropout: bool | None = None


class InversionPublic(JobBase):
    attempts: int = Field(description="Times a worker took the job (a worker that died counts).")
    links: dict[str, str]

    @classmethod
    def of(cls, record: JobRecord) -> InversionPublic:
        id = record.id
        links = {"self": f"/inversions/{id}", "events": f"/inversions/{id}/events"}
        if record.state == "succeeded":
            links |= {
                "samples": f"/inversions/{id}/samples",
                "grid": f"/inversions/{id}/grid.png",
                "zip": f"/inversions/{id}/samples.zip",
                "npz": f"/inversions/{id}/samples.npz",
                "metrics": f"/inversions/{id}/metrics.json",
                "report": f"/inversions/{id}/report",
                "dataset": f"/inversions/{id}/dataset",
            }
        return cls(
            **record.model_dump(include=set(JobBase.model_fields)),
            attempts=record.task.attempts,
            links=links,
        )


class InversionsPublic(ListPublic):
    data: list[InversionPublic]


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


class SamplesPublic(ListPublic):
    data: list[SamplePublic]


__all__ = [
    "ClassifierCreate",
    "ClassifierPublic",
    "ClassifiersPublic",
    "DatasetCreate",
    "DatasetPublic",
    "DatasetsPublic",
    "FieldProblem",
    "HealthPublic",
    "InversionCreate",
    "InversionPublic",
    "InversionsPublic",
    "ListPublic",
    "ProblemPublic",
    "ReadinessPublic",
    "SamplePublic",
    "SamplesPublic",
    "SamplingCreate",
    "TopKPublic",
]
