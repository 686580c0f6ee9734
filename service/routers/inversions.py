"""Inversion jobs: start, read, list, follow (SSE), cancel, delete; samples and exports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from models.contracts.artifacts import ArtifactName
from service import quotas, samples
from service.deps import CeleryDep, SettingsDep, StoresDep, TenantDep
from service.errors import Conflict, InvalidField
from service.jobs import cancel, enqueue, new_sampling_job, resume, start_job
from service.records import FINISHED_JOB_STATES, JobRecord, StateEvent, events_stream
from service.registry import get_owned
from service.schemas import (
    InversionCreate,
    InversionPublic,
    InversionsPublic,
    SamplesPublic,
    SamplingCreate,
)
from service.storage import keys

router = APIRouter(prefix="/inversions", tags=["inversions"])

RETRY_AFTER_SECONDS = "2"
SSE_POLL_SECONDS = 0.5
SSE_RETRY_MS = 2000


def get_job(id: str, tenant: TenantDep, stores: StoresDep) -> JobRecord:
    return get_owned(stores, JobRecord, id, tenant)


JobDep = Annotated[JobRecord, Depends(get_job)]


def _with_status_headers(response: Response, job: JobRecord) -> InversionPublic:
    response.headers["Location"] = f"/inversions/{job.id}"
    if job.state not in FINISHED_JOB_STATES:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return InversionPublic.of(job)


@router.post("", status_code=202, response_model=InversionPublic)
def create_inversion(
    body: InversionCreate,
    response: Response,
    tenant: TenantDep,
    stores: StoresDep,
    celery: CeleryDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> InversionPublic:
    """Start an inversion job. With an `Idempotency-Key` header, repeating the same request
    returns the job it started instead of starting another."""
    job = start_job(stores, celery, settings, tenant, body, idempotency_key)
    return _with_status_headers(response, job)


@router.get("", response_model=InversionsPublic)
def list_inversions(
    tenant: TenantDep,
    stores: StoresDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    classifier_id: str | None = None,
    state: str | None = None,
    method: str | None = None,
) -> InversionsPublic:
    def match(job: JobRecord) -> bool:
        return (classifier_id is None or job.classifier_id == classifier_id) and (
            method is None or job.method == method
        )

    page = stores.jobs.list(
        JobRecord, tenant=tenant, state=state, match=match, offset=offset, limit=limit
    )
    return InversionsPublic(data=[InversionPublic.of(j) for j in page.items], count=page.count)


@router.get("/{id}", response_model=InversionPublic)
def read_inversion(job: JobDep, response: Response) -> InversionPublic:
    """The job's state, progress, timings and attempts; `Retry-After` while it runs."""
    return _with_status_headers(response, job)


@router.post("/{id}/cancel", status_code=202, response_model=InversionPublic)
def cancel_inversion(job: JobDep, response: Response, stores: StoresDep) -> InversionPublic:
    """A queued job is cancelled at once; a running one stops at its next step."""
    return _with_status_headers(response, cancel(stores.jobs, job))


@router.post("/{id}/resume", status_code=202, response_model=InversionPublic)
def resume_inversion(
    job: JobDep, response: Response, stores: StoresDep, celery: CeleryDep
) -> InversionPublic:
    """Queue a cancelled or failed job again; training continues from its last checkpoint."""
    resumed = resume(stores.jobs, job)
    enqueue(stores, celery, resumed, new=False)
    return _with_status_headers(response, resumed)


@router.delete("/{id}", status_code=204)
def delete_inversion(job: JobDep, stores: StoresDep) -> Response:
    if job.state not in FINISHED_JOB_STATES:
        raise Conflict(f"job {job.id} is {job.state}: cancel it first")
    # Files first: that frees space even when the disk is full, and a crash in between leaves a
    # record whose files read as gone (and can be deleted again), never files without a record.
    stores.artifacts.delete_prefix(keys.job_prefix(job.tenant, job.id))
    samples.forget(job.id)
    stores.jobs.delete_events(events_stream(job.id))
    stores.jobs.delete(JobRecord, job.id)
    return Response(status_code=204)


@router.get("/{id}/events", response_class=EventSourceResponse)
async def follow_inversion(
    job: JobDep,
    request: Request,
    stores: StoresDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: `progress` while training, `state` on every change; ends after the
    final state. Reconnect with `Last-Event-ID` to resume where you left off."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    stream = events_stream(job.id)
    yield ServerSentEvent(retry=SSE_RETRY_MS, comment="c3 job events")
    while True:
        events = await run_in_threadpool(stores.jobs.read_events, stream, after)
        for seq, event in events:
            after = seq
            yield ServerSentEvent(
                raw_data=event.model_dump_json(exclude_none=True), event=event.type, id=str(seq)
            )
            if isinstance(event, StateEvent) and event.state in FINISHED_JOB_STATES:
                return
        if not events:
            if await run_in_threadpool(stores.jobs.get, JobRecord, job.id) is None:
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_SECONDS)


@router.get("/{id}/samples", response_model=SamplesPublic)
def list_samples(
    job: JobDep,
    stores: StoresDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    class_: Annotated[int | None, Query(alias="class", ge=0)] = None,
    min_confidence: Annotated[float, Query(ge=0, le=1)] = 0.0,
    max_confidence: Annotated[float, Query(ge=0, le=1)] = 1.0,
) -> SamplesPublic:
    """Samples with their confidences, filtered by target class and confidence range."""
    records = [
        r
        for r in samples.sample_index(stores.artifacts, job)
        if (class_ is None or r.target == class_)
        and min_confidence <= r.confidence <= max_confidence
    ]
    page = records[offset : offset + limit]
    return SamplesPublic(data=[samples.to_public(job, r) for r in page], count=len(records))


@router.post("/{id}/samples", status_code=202, response_model=InversionPublic)
def sample_more(
    job: JobDep,
    response: Response,
    stores: StoresDep,
    celery: CeleryDep,
    settings: SettingsDep,
    body: Annotated[SamplingCreate, Body()] = SamplingCreate(),  # noqa: B008
) -> InversionPublic:
    """Draw new samples from this job's trained generator: a quick follow-up job, no training."""
    quotas.check_jobs(stores.jobs, settings, job.tenant)
    follow_up = new_sampling_job(settings, job, body)
    enqueue(stores, celery, follow_up)
    return _with_status_headers(response, follow_up)


PNG: dict[str, Any] = {"content": {"image/png": {}}}


@router.get("/{id}/samples/{index}.png", response_class=Response, responses={200: PNG})
def sample_image(job: JobDep, index: int, request: Request, stores: StoresDep) -> Response:
    return samples.immutable(request, samples.sample_png(stores.artifacts, job, index), "image/png")


@router.get("/{id}/grid.png", response_class=Response, responses={200: PNG})
def grid_image(
    job: JobDep,
    request: Request,
    stores: StoresDep,
    classes: Annotated[
        str | None, Query(max_length=8000, description="Comma-separated class indices")
    ] = None,
    per_class: Annotated[
        int, Query(ge=1, le=1000, description="Samples shown per class (the first ones)")
    ] = 100,
) -> Response:
    """The samples as a grid, one row per class (optionally only `classes`), at most
    `samples.MAX_GRID_PIXELS` pixels."""
    wanted = None
    if classes:
        try:
            wanted = [int(c) for c in classes.split(",") if c.strip()]
        except ValueError:
            raise InvalidField(
                "comma-separated class indices, e.g. 0,3,7", field="classes"
            ) from None
        if len(set(wanted)) != len(wanted):
            raise InvalidField("each class at most once", field="classes")
    grid = samples.grid_png(stores.artifacts, job, wanted, per_class)
    return samples.immutable(request, grid, "image/png")


def _download(request: Request, data: bytes, media_type: str, filename: str) -> Response:
    response = samples.immutable(request, data, media_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@router.get("/{id}/samples.zip", response_class=Response)
def samples_zip(job: JobDep, request: Request, stores: StoresDep) -> Response:
    return _download(
        request,
        samples.samples_zip(stores.artifacts, job),
        "application/zip",
        f"{job.id}-samples.zip",
    )


@router.get("/{id}/samples.npz", response_class=Response)
def samples_npz(job: JobDep, request: Request, stores: StoresDep) -> Response:
    """`x` (N×C×H×W uint8), `targets`, `predicted`, `confidence`."""
    return _download(
        request,
        samples.samples_npz(stores.artifacts, job),
        "application/octet-stream",
        f"{job.id}-samples.npz",
    )


@router.get("/{id}/metrics.json", response_class=Response)
def metrics_json(job: JobDep, request: Request, stores: StoresDep) -> Response:
    """Every metric, per class and overall (see the method notes)."""
    samples.require_succeeded(job)
    data = samples.artifact(stores.artifacts, job, ArtifactName.METRICS_JSON)
    return samples.immutable(request, data, "application/json")


@router.get("/{id}/dataset", response_class=Response)
def reject_class_dataset(job: JobDep, request: Request, stores: StoresDep) -> Response:
    """The counterfeits as a labelled reject-class training set (`.npz`: x, y = K, …)."""
    return _download(
        request,
        samples.reject_class_dataset(stores.artifacts, job),
        "application/octet-stream",
        f"{job.id}-reject-class.npz",
    )
