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

from service.background import WORK
from service.errors import Conflict, InvalidField, NotFound, Unavailable
from service.queue import publish
from service.records import ACTIVE_JOB_STATES, CLASSIFIER, DATASET, JOB, new_id, new_record
from service.settings import ServiceSettings
from service.storage import Page, Stores
from service.uploads import Upload, receive_upload

M = TypeVar("M", bound=BaseModel)
MAX_WAIT_SECONDS = 120.0
ID_PREFIXES = {CLASSIFIER: "clf", DATASET: "ds"}


def parse_form(model: type[M], fields: dict[str, Any]) -> M:
    """Validate form fields into `model`; the first error names its field (a list's field, not
    its item: `input_shape`, not `input_shape.2`)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"] if not isinstance(p, int)) or None,
             "detail": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()
        ]  # fmt: skip
        field, message = errors[0]["field"], str(errors[0]["detail"])
        raise InvalidField(
            f"{field}: {message}" if field else message, field=field, errors=errors
        ) from exc


def preferred_wait(request: Request) -> float:
    """Seconds from an RFC 7240 `Prefer: wait=N` header, capped; 0 when absent."""
    match = re.search(r"\bwait\s*=\s*(\d+)", request.headers.get("prefer", ""))
    return min(float(match.group(1)), MAX_WAIT_SECONDS) if match else 0.0


def get_owned(stores: Stores, kind: str, id: str, tenant: str) -> dict[str, Any]:
    """The tenant's record, or 404: another tenant's records do not exist for it."""
    doc = stores.jobs.get(kind, id)
    if doc is None or doc["tenant"] != tenant:
        raise NotFound(f"no {kind} with id {id!r}")
    return doc


async def register_upload(
    request: Request,
    *,
    kind: str,
    tenant: str,
    stores: Stores,
    celery: Celery,
    settings: ServiceSettings,
    schema: type[M],
    upload_key: Callable[[str, str], str],
    fields: Callable[[M, Upload], dict[str, Any]],
) -> dict[str, Any]:
    """Store an upload and queue its validation; returns the record (after the preferred wait)."""
    upload = await receive_upload(request, max_bytes=settings.max_upload_bytes)
    try:
        meta = parse_form(schema, upload.fields)
        id = new_id(ID_PREFIXES[kind])
        await run_in_threadpool(
            stores.artifacts.put_stream, upload_key(tenant, id), upload.chunks()
        )
        doc = new_record(
            tenant,
            id,
            WORK[kind].waiting_state,
            sha256=upload.sha256,
            size_bytes=upload.size,
            filename=upload.filename,
            **fields(meta, upload),
        )
    finally:
        upload.close()
    await run_in_threadpool(stores.jobs.create, kind, doc)
    try:
        await run_in_threadpool(publish, celery, WORK[kind].task_name, id)
    except Exception as exc:
        await run_in_threadpool(stores.jobs.delete, kind, id)
        await run_in_threadpool(stores.artifacts.delete_prefix, upload_key(tenant, id))
        raise Unavailable(f"the task queue is unavailable, upload not kept: {exc}") from exc
    return await wait_for_verdict(request, stores, kind, doc)


async def wait_for_verdict(
    request: Request, stores: Stores, kind: str, doc: dict[str, Any]
) -> dict[str, Any]:
    deadline = time.monotonic() + preferred_wait(request)
    waiting = WORK[kind].waiting_state
    while doc["state"] == waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        doc = await run_in_threadpool(_reread, stores, kind, doc)
    return doc


def _reread(stores: Stores, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    return stores.jobs.get(kind, doc["id"]) or doc


async def blob_chunks(stream: BinaryIO, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """Stream an opened blob without blocking the event loop."""
    try:
        while chunk := await run_in_threadpool(stream.read, size):
            yield chunk
    finally:
        stream.close()


def list_registered(
    stores: Stores,
    kind: str,
    tenant: str,
    *,
    name: str | None,
    tag: str | None,
    status: str | None,
    offset: int,
    limit: int,
) -> Page:
    """A page of the tenant's records, filtered by name substring, tag and status."""

    def match(doc: dict[str, Any]) -> bool:
        return (name is None or name.lower() in doc["name"].lower()) and (
            tag is None or tag in doc["tags"]
        )

    return stores.jobs.list(
        kind, tenant=tenant, state=status, match=match, offset=offset, limit=limit
    )


def delete_registered(stores: Stores, kind: str, doc: dict[str, Any], blob_prefix: str) -> None:
    """Delete a classifier or dataset and its files, unless a job still needs it (409)."""
    id = doc["id"]
    active = stores.jobs.list(
        JOB,
        tenant=doc["tenant"],
        match=lambda d: (
            id in (d.get("classifier_id"), d.get("dataset_id")) and d["state"] in ACTIVE_JOB_STATES
        ),
    )
    if active.count:
        raise Conflict(
            f"{active.count} job(s) using this {kind} are queued or running: "
            "cancel them or wait for them to finish",
            jobs=[d["id"] for d in active.items],
        )
    if doc["state"] == WORK[kind].waiting_state:
        raise Conflict(f"the {kind} is being validated; delete it once that has finished")
    stores.jobs.delete(kind, id)
    stores.artifacts.delete_prefix(blob_prefix)


def classifier_fields(meta: BaseModel, upload: Upload) -> dict[str, Any]:
    """A classifier record's own fields, from its validated metadata."""
    return meta.model_dump()


def dataset_fields(meta: BaseModel, upload: Upload) -> dict[str, Any]:
    """A dataset record's own fields; the format comes from the file name when not given."""
    fields = meta.model_dump()
    if fields["format"] is None:
        name = (upload.filename or "").lower()
        if name.endswith(".npz"):
            fields["format"] = "npz"
        elif name.endswith(".zip"):
            fields["format"] = "png-zip"
        else:
            raise InvalidField(
                "say `npz` or `png-zip`, or upload a file named *.npz or *.zip", field="format"
            )
    return fields
