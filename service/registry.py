"""What classifier and dataset uploads share: receive the file, store it, create the record,
hand validation to a worker, and optionally wait for its verdict (`Prefer: wait=N`)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO, TypeVar

from celery import Celery
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from models.contracts.errors import field_errors
from service import logs, quotas
from service.background import publish_task
from service.errors import Conflict, InvalidField, NotFound, Unavailable
from service.records import (
    ACTIVE_JOB_STATES,
    ClassifierRecord,
    DatasetRecord,
    JobRecord,
    Upload,
    UploadState,
    new_id,
)
from service.schemas import ClassifierCreate, DatasetCreate
from service.settings import ServiceSettings
from service.storage import Page, Stores
from service.storage.base import R
from service.uploads import Upload as UploadedFile
from service.uploads import receive_upload

M = TypeVar("M", bound=BaseModel)
U = TypeVar("U", bound=Upload)
MAX_WAIT_SECONDS = 120.0
ID_PREFIXES = {ClassifierRecord.KIND: "clf", DatasetRecord.KIND: "ds"}


def parse_form(model: type[M], fields: dict[str, Any]) -> M:
    """Validate form fields into `model`; the first error names its field (a list's field, not
    its item: `input_shape`, not `input_shape.2`)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise InvalidField(
            str(errors[0]),
            field=errors[0].field,
            errors=[{"field": e.field, "detail": e.detail} for e in errors],
        ) from exc


def preferred_wait(request: Request) -> float:
    """Seconds from an RFC 7240 `Prefer: wait=N` header, capped; 0 when absent."""
    match = re.search(r"\bwait\s*=\s*(\d+)", request.headers.get("prefer", ""))
    return min(float(match.group(1)), MAX_WAIT_SECONDS) if match else 0.0


def get_owned(stores: Stores, model: type[R], id: str, tenant: str) -> R:
    """The tenant's record, or 404: another tenant's records do not exist for it."""
    record = stores.jobs.get(model, id)
    if record is None or record.tenant != tenant:
        raise NotFound(f"no {model.KIND} with id {id!r}")
    return record


def classifier_record(
    id: str, tenant: str, meta: ClassifierCreate, file: UploadedFile
) -> ClassifierRecord:
    return ClassifierRecord(
        id=id,
        tenant=tenant,
        sha256=file.sha256,
        size_bytes=file.size,
        filename=file.filename,
        **meta.model_dump(),
    )


def dataset_record(id: str, tenant: str, meta: DatasetCreate, file: UploadedFile) -> DatasetRecord:
    """A dataset's record; its format comes from the file name when not given."""
    fields = meta.model_dump()
    if fields["format"] is None:
        name = (file.filename or "").lower()
        if name.endswith(".npz"):
            fields["format"] = "npz"
        elif name.endswith(".zip"):
            fields["format"] = "png-zip"
        else:
            raise InvalidField(
                "say `npz` or `png-zip`, or upload a file named *.npz or *.zip", field="format"
            )
    return DatasetRecord(
        id=id,
        tenant=tenant,
        sha256=file.sha256,
        size_bytes=file.size,
        filename=file.filename,
        **fields,
    )


async def register_upload(
    request: Request,
    *,
    model: type[U],
    tenant: str,
    stores: Stores,
    celery: Celery,
    settings: ServiceSettings,
    schema: type[M],
    upload_key: Callable[[str, str], str],
    record: Callable[[str, str, M, UploadedFile], U],
) -> U:
    """Store an upload and queue its validation; returns the record (after the preferred wait)."""
    declared = request.headers.get("content-length", "")
    await run_in_threadpool(
        quotas.check_upload, stores.jobs, settings, tenant, model,
        int(declared) if declared.isdigit() else 0,
    )  # fmt: skip
    upload = await receive_upload(request, max_bytes=settings.max_upload_bytes)
    try:
        await run_in_threadpool(quotas.check_storage, stores.jobs, settings, tenant, upload.size)
        meta = parse_form(schema, upload.fields)
        id = new_id(ID_PREFIXES[model.KIND])
        doc = record(id, tenant, meta, upload)
        doc.task.request_id = logs.current("request_id")
        logs.annotate(upload_id=id)
        await run_in_threadpool(
            stores.artifacts.put_stream, upload_key(tenant, id), upload.chunks()
        )
    finally:
        upload.close()
    await run_in_threadpool(stores.jobs.create, doc)
    try:
        await run_in_threadpool(publish_task, stores.jobs, celery, model, id)
    except Exception as exc:
        await run_in_threadpool(stores.jobs.delete, model, id)
        await run_in_threadpool(stores.artifacts.delete_prefix, upload_key(tenant, id))
        raise Unavailable(f"the task queue is unavailable, upload not kept: {exc}") from exc
    return await wait_for_verdict(request, stores, doc)


async def wait_for_verdict(request: Request, stores: Stores, record: U) -> U:
    deadline = time.monotonic() + preferred_wait(request)
    while record.state == UploadState.VALIDATING and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        fresh = await run_in_threadpool(stores.jobs.get, type(record), record.id)
        record = fresh or record
    return record


async def blob_chunks(stream: BinaryIO, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """Stream an opened blob without blocking the event loop."""
    try:
        while chunk := await run_in_threadpool(stream.read, size):
            yield chunk
    finally:
        stream.close()


def list_registered(
    stores: Stores,
    model: type[U],
    tenant: str,
    *,
    name: str | None,
    tag: str | None,
    status: str | None,
    offset: int,
    limit: int,
) -> Page[U]:
    """A page of the tenant's records, filtered by name substring, tag and status."""

    def match(record: Any) -> bool:
        return (name is None or name.lower() in record.name.lower()) and (
            tag is None or tag in record.tags
        )

    return stores.jobs.list(
        model, tenant=tenant, state=status, match=None if name is None and tag is None else match,
        offset=offset, limit=limit,
    )  # fmt: skip


def delete_registered(stores: Stores, record: Upload, blob_prefix: str) -> None:
    """Delete a classifier or dataset and its files, unless a job still needs it (409)."""
    id, kind = record.id, record.KIND
    active = [  # bounded by the active-jobs quota, however many jobs the tenant has
        job
        for state in ACTIVE_JOB_STATES
        for job in stores.jobs.list(JobRecord, tenant=record.tenant, state=state).items
        if id in (job.classifier_id, job.dataset_id)
    ]
    if active:
        raise Conflict(
            f"{len(active)} job(s) using this {kind} are queued or running: "
            "cancel them or wait for them to finish",
            jobs=[job.id for job in active],
        )
    if record.state == UploadState.VALIDATING:
        raise Conflict(f"the {kind} is being validated; delete it once that has finished")
    stores.artifacts.delete_prefix(blob_prefix)  # first: frees space even on a full disk
    stores.jobs.delete(type(record), id)
