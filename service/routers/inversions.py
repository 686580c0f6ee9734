"""Inversion jobs: start, read, list, follow (SSE), cancel, delete; samples and exports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from models.contracts.artifacts import ArtifactName, InversionMetrics
from service import downloads, logs, samples
from service.deps import CeleryDep, SettingsDep, StoresDep, TenantDep
from service.errors import InvalidField
from service.jobs import cancel, delete_job, draw_more, resume_and_enqueue, start_job
from service.openapi import binary, problems
from service.paging import RecordPaging, SamplePaging
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
from service.storage.keys import JobFile

router = APIRouter(prefix="/inversions", tags=["inversions"])

RETRY_AFTER_SECONDS = "2"
SSE_POLL_SECONDS = 0.5
SSE_RETRY_MS = 2000


def get_job(id: str, tenant: TenantDep, stores: StoresDep) -> JobRecord:
    logs.annotate(job_id=id)
    return get_owned(stores, JobRecord, id, tenant)


JobDep = Annotated[JobRecord, Depends(get_job)]


def _with_status_headers(response: Response, job: JobRecord) -> InversionPublic:
    response.headers["Location"] = f"/inversions/{job.id}"
    if job.state not in FINISHED_JOB_STATES:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return InversionPublic.of(job)


@router.post("", status_code=202, response_model=InversionPublic, responses=problems(409, 429))
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
    paging: RecordPaging,
    classifier_id: str | None = None,
    state: str | None = None,
    method: str | None = None,
) -> InversionsPublic:
    where = {"classifier_id": classifier_id, "method": method}
    page = stores.jobs.list(
        JobRecord, tenant=tenant, state=state,
        where={name: value for name, value in where.items() if value is not None},
        offset=paging.offset, limit=paging.limit,
    )  # fmt: skip
    return InversionsPublic(
        data=[InversionPublic.of(j) for j in page.items],
        count=page.count,
        next=paging.next(page.count),
    )


@router.get("/{id}", response_model=InversionPublic)
def read_inversion(job: JobDep, response: Response) -> InversionPublic:
    """The job's state, progress, timings and attempts; `Retry-After` while it runs."""
    return _with_status_headers(response, job)


@router.post(
    "/{id}/cancel", status_code=202, response_model=InversionPublic, responses=problems(409)
)
def cancel_inversion(job: JobDep, response: Response, stores: StoresDep) -> InversionPublic:
    """A queued job is cancelled at once; a running one stops at its next step."""
    return _with_status_headers(response, cancel(stores.jobs, job))


@router.post(
    "/{id}/resume", status_code=202, response_model=InversionPublic, responses=problems(409)
)
def resume_inversion(
    job: JobDep, response: Response, stores: StoresDep, celery: CeleryDep
) -> InversionPublic:
    """Queue a cancelled or failed job again; training continues from its last checkpoint."""
    return _with_status_headers(response, resume_and_enqueue(stores, celery, job))


@router.delete("/{id}", status_code=204, responses=problems(409))
def delete_inversion(job: JobDep, stores: StoresDep) -> Response:
    delete_job(stores, job)
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


@router.get("/{id}/samples", response_model=SamplesPublic, responses=problems(409))
def list_samples(
    job: JobDep,
    request: Request,
    stores: StoresDep,
    paging: SamplePaging,
    after: Annotated[
        int | None,
        Query(ge=-1, description="Cursor: only samples with a larger index (follow `next`)."),
    ] = None,
    class_: Annotated[int | None, Query(alias="class", ge=0)] = None,
    min_confidence: Annotated[float, Query(ge=0, le=1)] = 0.0,
    max_confidence: Annotated[float, Query(ge=0, le=1)] = 1.0,
) -> SamplesPublic:
    """Samples with their confidences, in index order, filtered by target class and confidence
    range. `count` is how many match; follow `next` (a cursor) for the following page."""
    table = samples.table(stores.artifacts, job)
    matching = table.select(class_, min_confidence, max_confidence)
    start = paging.offset
    if after is not None:
        start += int(np.searchsorted(matching, after, side="right"))
    page = matching[start : start + paging.limit]
    more = start + paging.limit < len(matching)
    return SamplesPublic(
        data=[samples.to_public(job, table.record(int(i))) for i in page],
        count=len(matching),
        next=paging.next_after(int(page[-1])) if more else None,
    )


@router.post(
    "/{id}/samples", status_code=202, response_model=InversionPublic, responses=problems(409, 429)
)
def sample_more(
    job: JobDep,
    response: Response,
    stores: StoresDep,
    celery: CeleryDep,
    settings: SettingsDep,
    body: Annotated[SamplingCreate, Body()] = SamplingCreate(),  # noqa: B008
) -> InversionPublic:
    """Draw new samples from this job's trained generator: a quick follow-up job, no training."""
    return _with_status_headers(response, draw_more(stores, celery, settings, job, body))


PNG = {**binary("image/png"), **problems(409)}


@router.get("/{id}/samples/{index}.png", response_class=Response, responses=PNG)
def sample_image(job: JobDep, index: int, request: Request, stores: StoresDep) -> Response:
    return downloads.immutable(
        request, samples.sample_png(stores.artifacts, job, index), "image/png"
    )


@router.get("/{id}/grid.png", response_class=Response, responses=PNG)
def grid_image(
    job: JobDep,
    request: Request,
    stores: StoresDep,
    classes: Annotated[
        str | None, Query(max_length=8000, description="Comma-separated class indices")
    ] = None,
    per_class: Annotated[
        int | None,
        Query(
            ge=1,
            le=1000,
            description="Samples shown per class (the first ones); default: up to 100, as many "
            "as fit",
        ),
    ] = None,
) -> Response:
    """The samples as a grid: each class under its name (optionally only `classes`), its
    samples wrapped at 16 a row; at most `samples.MAX_GRID_PIXELS` pixels."""
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
    return downloads.immutable(request, grid, "image/png")


def _stored(
    job: JobRecord, request: Request, stores: StoresDep, settings: SettingsDep,
    name: ArtifactName | JobFile, media_type: str, filename: str | None,
) -> Response:  # fmt: skip
    """One of the job's stored files, streamed (ETag, byte ranges) or redirected."""
    samples.require_succeeded(job)
    manifest = samples.manifest(stores.artifacts, job)
    key = keys.job_artifact(job.tenant, job.id, name)
    return downloads.stored(
        request, stores.artifacts, settings, key, manifest.files[name.value], media_type, filename
    )


def stored_file(media_type: str) -> dict[int | str, dict[str, Any]]:
    """The responses of a stored file's download: whole, a byte range, not modified."""
    return {
        **binary(media_type),
        206: {"description": "The byte range asked for (`Range: bytes=…`)."},
        307: {
            "description": "A presigned URL of the blob store serves the file (large files, "
            "when the service is configured so)."
        },
        304: {"description": "Not modified: `If-None-Match` names the file's ETag."},
        **problems(409, 416),
    }


@router.get("/{id}/samples.zip", response_class=Response, responses=stored_file("application/zip"))
def samples_zip(
    job: JobDep, request: Request, stores: StoresDep, settings: SettingsDep
) -> Response:
    """Every sample as PNG (`samples/000000.png`, …) with samples.json and metrics.json."""
    return _stored(
        job,
        request,
        stores,
        settings,
        JobFile.SAMPLES_ZIP,
        "application/zip",
        f"{job.id}-samples.zip",
    )


NPZ = stored_file("application/octet-stream")


@router.get("/{id}/samples.npz", response_class=Response, responses=NPZ)
def samples_npz(
    job: JobDep, request: Request, stores: StoresDep, settings: SettingsDep
) -> Response:
    """`x` (N×C×H×W uint8), `targets`, `predicted`, `confidence`."""
    return _stored(
        job, request, stores, settings, ArtifactName.SAMPLES_NPZ, "application/octet-stream",
        f"{job.id}-samples.npz",
    )  # fmt: skip


@router.get(
    "/{id}/metrics.json",
    response_class=Response,
    responses={200: {"model": InversionMetrics}, **problems(409)},
)
def metrics_json(
    job: JobDep, request: Request, stores: StoresDep, settings: SettingsDep
) -> Response:
    """Every metric, per class and overall (see the method notes)."""
    return _stored(
        job, request, stores, settings, ArtifactName.METRICS_JSON, "application/json", None
    )


@router.get("/{id}/dataset", response_class=Response, responses=NPZ)
def reject_class_dataset(
    job: JobDep, request: Request, stores: StoresDep, settings: SettingsDep
) -> Response:
    """The counterfeits as a labelled reject-class training set (`.npz`: x, y = K, …)."""
    return _stored(
        job, request, stores, settings, JobFile.REJECT_CLASS, "application/octet-stream",
        f"{job.id}-reject-class.npz",
    )  # fmt: skip
