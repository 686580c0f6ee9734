"""What the sync and the async client share: each endpoint as a `Call` (method, path, query,
body, how to read the answer), the retry policy, upload forms with progress, and job events.
Only the sending differs between the two clients (`service.client.sync`, `.aio`).

The answers are read into the service's own schemas (`service.schemas`, the report's
`ReportPublic`, the engine's `InversionMetrics`), so client and server share one contract.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar

import httpx
from pydantic import BaseModel

from models.contracts.artifacts import InversionMetrics
from models.contracts.inversion import MethodName
from service.client.errors import InvalidInputError, UploadRejected
from service.records import JobEvents, ProgressEvent, StateEvent, UploadState
from service.report import ReportPublic
from service.schemas import (
    ClassifierPublic,
    ClassifiersPublic,
    DatasetPublic,
    DatasetsPublic,
    HealthPublic,
    InversionCreate,
    InversionPublic,
    InversionsPublic,
    ProblemPublic,
    ReadinessPublic,
    SamplesPublic,
    SamplingCreate,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
M = TypeVar("M", bound=BaseModel)
U = TypeVar("U", ClassifierPublic, DatasetPublic)
JobEvent = ProgressEvent | StateEvent
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as an upload or a download moves."""
MAX_PREFER_WAIT = 120  # the service waits at most this long for a verdict in one request
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Call(Generic[T_co]):
    """One request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T_co]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    ok: tuple[int, ...] = ()  # error statuses whose body is still the answer (readiness: 503)


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    """Read an answer into the service's schema, ignoring fields it does not declare (computed
    ones like `num_classes`, and those a newer service adds)."""
    return lambda response: model.model_validate_json(response.content, extra="ignore")


def _none(response: httpx.Response) -> None:
    return None


def _query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


# --- the endpoints, one builder each ----------------------------------------------------------


def health() -> Call[HealthPublic]:
    return Call("GET", "/healthz", _model(HealthPublic))


def readiness() -> Call[ReadinessPublic]:
    return Call("GET", "/readyz", _model(ReadinessPublic), ok=(503,))


def prometheus_metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda response: response.text)


def list_classifiers(
    *,
    name: str | None = None,
    tag: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> Call[ClassifiersPublic]:
    params = _query(name=name, tag=tag, status=status, limit=limit)
    return Call("GET", "/classifiers", _model(ClassifiersPublic), params)


def get_classifier(id: str) -> Call[ClassifierPublic]:
    return Call("GET", f"/classifiers/{id}", _model(ClassifierPublic))


def delete_classifier(id: str) -> Call[None]:
    return Call("DELETE", f"/classifiers/{id}", _none)


def list_datasets(
    *,
    name: str | None = None,
    tag: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> Call[DatasetsPublic]:
    params = _query(name=name, tag=tag, status=status, limit=limit)
    return Call("GET", "/datasets", _model(DatasetsPublic), params)


def get_dataset(id: str) -> Call[DatasetPublic]:
    return Call("GET", f"/datasets/{id}", _model(DatasetPublic))


def delete_dataset(id: str) -> Call[None]:
    return Call("DELETE", f"/datasets/{id}", _none)


def start_inversion(
    classifier_id: str,
    *,
    method: MethodName = "c3",
    dataset_id: str | None = None,
    classes: Sequence[int] | None = None,
    samples_per_class: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    loss_weights: dict[str, float] | None = None,
    seed: int | None = None,
    sample_dropout: bool | None = None,
    idempotency_key: str | None = None,
) -> Call[InversionPublic]:
    """Start a job; the body is checked against the API's own `InversionCreate` first."""
    given = _query(
        classifier_id=classifier_id, method=method, dataset_id=dataset_id,
        classes=list(classes) if classes is not None else None,
        samples_per_class=samples_per_class, steps=steps, batch_size=batch_size,
        loss_weights=loss_weights, seed=seed, sample_dropout=sample_dropout,
    )  # fmt: skip
    body = InversionCreate.model_validate(given).model_dump(mode="json", exclude_unset=True)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call("POST", "/inversions", _model(InversionPublic), json=body, headers=headers)


def list_inversions(
    *,
    classifier_id: str | None = None,
    state: str | None = None,
    method: str | None = None,
    limit: int | None = None,
) -> Call[InversionsPublic]:
    params = _query(classifier_id=classifier_id, state=state, method=method, limit=limit)
    return Call("GET", "/inversions", _model(InversionsPublic), params)


def get_inversion(id: str) -> Call[InversionPublic]:
    return Call("GET", f"/inversions/{id}", _model(InversionPublic))


def cancel_inversion(id: str) -> Call[InversionPublic]:
    return Call("POST", f"/inversions/{id}/cancel", _model(InversionPublic))


def resume_inversion(id: str) -> Call[InversionPublic]:
    return Call("POST", f"/inversions/{id}/resume", _model(InversionPublic))


def delete_inversion(id: str) -> Call[None]:
    return Call("DELETE", f"/inversions/{id}", _none)


def list_samples(
    id: str,
    *,
    class_: int | None = None,
    min_confidence: float | None = None,
    max_confidence: float | None = None,
    limit: int | None = None,
) -> Call[SamplesPublic]:
    params = _query(
        min_confidence=min_confidence, max_confidence=max_confidence, limit=limit
    ) | _query(**{"class": class_})
    return Call("GET", f"/inversions/{id}/samples", _model(SamplesPublic), params)


def sample_more(
    id: str,
    *,
    samples_per_class: int = 100,
    classes: Sequence[int] | None = None,
    seed: int | None = None,
    sample_dropout: bool | None = None,
) -> Call[InversionPublic]:
    body = SamplingCreate(
        samples_per_class=samples_per_class,
        classes=list(classes) if classes is not None else None,
        seed=seed,
        sample_dropout=sample_dropout,
    ).model_dump(mode="json", exclude_none=True)
    return Call("POST", f"/inversions/{id}/samples", _model(InversionPublic), json=body)


def sample_png(id: str, index: int) -> Call[bytes]:
    return Call("GET", f"/inversions/{id}/samples/{index}.png", lambda r: r.content)


def metrics(id: str) -> Call[InversionMetrics]:
    return Call("GET", f"/inversions/{id}/metrics.json", _model(InversionMetrics))


def report(id: str, baseline: str | None = None) -> Call[ReportPublic]:
    """The audit report as JSON; a detector-aware job's sets it beside plain c3 (`baseline`:
    that job's id, else the newest on the same classifier and reference set)."""
    query = {"format": "json"} | ({} if baseline is None else {"baseline": baseline})
    return Call("GET", f"/inversions/{id}/report", _model(ReportPublic), query)


def next_page(call: Call[T], url: str) -> Call[T]:
    """The same list call for the page at `url` (a list's `next` link: filters included)."""
    return Call("GET", url, call.read, headers=call.headers)


# --- downloads ----------------------------------------------------------------------------------

Export = Literal["zip", "npz", "report-json", "report-html", "reject-dataset", "grid", "model"]


def export_call(id: str, what: Export, **params: Any) -> Call[None]:
    """The request of a file to download (its answer is streamed to disk, not read)."""
    path, query = {
        "zip": (f"/inversions/{id}/samples.zip", {}),
        "npz": (f"/inversions/{id}/samples.npz", {}),
        "report-json": (f"/inversions/{id}/report", {"format": "json"}),
        "report-html": (f"/inversions/{id}/report", {"format": "html"}),
        "reject-dataset": (f"/inversions/{id}/dataset", {}),
        "grid": (f"/inversions/{id}/grid.png", {}),
        "model": (f"/classifiers/{id}/file", {}),
    }[what]
    return Call("GET", path, _none, query | _query(**params))


def part_file(destination: Path) -> Path:
    """Where a download is written until it is complete (then renamed to `destination`)."""
    return destination.with_name(destination.name + ".part")


# --- uploads ------------------------------------------------------------------------------------


def form_value(value: Any) -> str:
    """A metadata value as the form part the service parses: lists comma-separated (as JSON
    when an item holds a comma), objects as JSON."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        items = [str(v) for v in value]
        return json.dumps(items) if any("," in i for i in items) else ",".join(items)
    return str(value)


def upload_form(fields: dict[str, Any]) -> dict[str, str]:
    return {name: form_value(value) for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class Upload(Generic[U]):
    """An upload to send: the file, its form fields, and how long to wait for its verdict."""

    model: type[U]
    endpoint: str
    path: Path
    fields: dict[str, str]
    wait: float
    on_progress: Progress | None

    def call(self) -> Call[U]:
        return Call("POST", self.endpoint, _model(self.model), headers=prefer_wait(self.wait))


def classifier_upload(
    file: str | Path,
    *,
    input_shape: str | Sequence[int],
    class_names: str | Sequence[str],
    name: str | None = None,
    format: str | None = None,
    architecture: str | None = None,
    architecture_config: dict[str, Any] | None = None,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    description: str | None = None,
    tags: str | Sequence[str] | None = None,
    wait: float = 120.0,
    on_progress: Progress | None = None,
) -> Upload[ClassifierPublic]:
    """Upload a model file with its declaration (the fields of `POST /classifiers`; the
    format by the file's suffix when not given) and wait up to `wait` seconds for its
    validation: the record, `ready` (or still `validating` after the wait); `UploadRejected`
    with the reason when it is refused."""
    path = Path(file)
    fields = upload_form({
        "name": name or path.stem, "format": format or guess_format(path),
        "input_shape": input_shape, "class_names": class_names, "architecture": architecture,
        "architecture_config": architecture_config, "mean": mean, "std": std,
        "description": description, "tags": tags,
    })  # fmt: skip
    return Upload(ClassifierPublic, "/classifiers", path, fields, wait, on_progress)


def dataset_upload(
    file: str | Path,
    *,
    name: str | None = None,
    format: str | None = None,
    description: str | None = None,
    tags: str | Sequence[str] | None = None,
    wait: float = 120.0,
    on_progress: Progress | None = None,
) -> Upload[DatasetPublic]:
    """Upload a reference set (.npz with `x` [and `y`], or a zip of PNGs and labels.csv),
    and wait for its validation as `classifier_upload` does."""
    path = Path(file)
    fields = upload_form(
        {"name": name or path.stem, "format": format, "description": description, "tags": tags}
    )
    return Upload(DatasetPublic, "/datasets", path, fields, wait, on_progress)


def rejected_upload(error: InvalidInputError) -> InvalidInputError:
    """A 422 that names an upload's id is its validation's refusal."""
    if error.problem.model_extra and "id" in error.problem.model_extra:
        return UploadRejected(error.problem, error.response)
    return error


def prefer_wait(wait: float) -> dict[str, str]:
    seconds = int(min(wait, MAX_PREFER_WAIT))
    return {"Prefer": f"wait={seconds}"} if seconds > 0 else {}


class ProgressFile:
    """A file read for an upload that reports how far the reading got. httpx rewinds it
    (`seek(0)`) before each attempt and sizes it through `fileno`, so a retry sends it whole
    and the service sees a `Content-Length`."""

    def __init__(self, path: Path, on_progress: Progress | None) -> None:
        self._file: IO[bytes] = path.open("rb")
        self.name = path.name
        self._total = os.fstat(self._file.fileno()).st_size
        self._on_progress = on_progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if self._on_progress is not None:
            self._on_progress(self._file.tell(), self._total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ProgressFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- retries and events ---------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a request that met 429 or 503 (or no connection): after `Retry-After` when
    the service says (if at most `max_retry_after`), else with exponential backoff."""

    attempts: int = 4  # tries in all
    backoff: float = 0.5  # seconds before the second try, doubled each time
    max_backoff: float = 8.0
    max_retry_after: float = 60.0  # a longer wait is not waited for: the error is raised

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds before try `attempt + 1` after `response` (None: no answer), or None when
        not to retry."""
        if attempt >= self.attempts:
            return None
        if response is not None:
            if response.status_code not in (429, 503):
                return None
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                seconds = float(retry_after)
                return seconds if seconds <= self.max_retry_after else None
        backoff = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return backoff * random.uniform(0.8, 1.2)


NO_RETRIES = RetryPolicy(attempts=1)


def job_event(data: str) -> JobEvent:
    """One server-sent event's data as the service's own event model."""
    return JobEvents.validate_json(data)


def is_final(event: JobEvent) -> bool:
    return isinstance(event, StateEvent) and event.state in FINAL_STATES


def refresh(record: U) -> Call[U]:
    """Read an upload's record again."""
    return Call("GET", record.links["self"], _model(type(record)))


def verdict(record: U) -> U:
    """An upload's record once validated; `UploadRejected` with the reason when rejected."""
    if record.status == UploadState.REJECTED:
        raise UploadRejected(
            ProblemPublic(
                type="/problems/invalid-input",
                title="Invalid input",
                status=422,
                detail=record.reason or "rejected",
                instance=record.links["self"],
                field="file",
                id=record.id,
            )
        )
    return record


def guess_format(path: Path) -> str:
    """A classifier file's format by its suffix (the service refuses what it cannot load)."""
    return "onnx" if path.suffix.lower() == ".onnx" else "safetensors"
