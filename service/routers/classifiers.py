"""Classifier registry: upload (validated by a worker), list, read, delete, download."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.deps import CeleryDep, SettingsDep, StoresDep, TenantDep
from service.errors import Conflict, InvalidField
from service.openapi import binary, multipart_body, problems
from service.paging import RecordPaging
from service.records import ClassifierRecord, Upload, UploadState
from service.registry import (
    blob_chunks,
    classifier_record,
    delete_registered,
    get_owned,
    list_registered,
    register_upload,
)
from service.schemas import ClassifierCreate, ClassifierPublic, ClassifiersPublic, DatasetPublic
from service.storage import keys

router = APIRouter(prefix="/classifiers", tags=["classifiers"])


def get_classifier(id: str, tenant: TenantDep, stores: StoresDep) -> ClassifierRecord:
    return get_owned(stores, ClassifierRecord, id, tenant)


ClassifierDep = Annotated[ClassifierRecord, Depends(get_classifier)]
P = TypeVar("P", ClassifierPublic, DatasetPublic)


def verdict_response(record: Upload, response: Response, public: P) -> P:
    """202 while validating, 201 once ready; a rejection is a 422 naming the reason."""
    response.headers["Location"] = public.links["self"]
    if record.state == UploadState.REJECTED:
        raise InvalidField(
            public.reason or "rejected",
            field="file",
            id=record.id,
            headers={"Location": public.links["self"]},
        )
    response.status_code = 201 if record.state == UploadState.READY else 202
    return public


@router.post(
    "",
    status_code=202,
    response_model=ClassifierPublic,
    responses={201: {"model": ClassifierPublic}, **problems(400, 415, 422, 429)},
    summary="Upload a classifier (multipart: `file` plus metadata fields)",
    openapi_extra=multipart_body(
        ClassifierCreate, "The model: a .safetensors file (with `architecture`) or an .onnx file."
    ),
)
async def create_classifier(
    request: Request,
    response: Response,
    tenant: TenantDep,
    stores: StoresDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Any:
    """Stores the file and queues its validation in a sandboxed worker process. Returns 202 with
    status `validating`; with `Prefer: wait=N` it waits up to N seconds for the verdict (201 when
    ready, 422 with the reason when rejected)."""
    record = await register_upload(
        request,
        model=ClassifierRecord,
        tenant=tenant,
        stores=stores,
        celery=celery,
        settings=settings,
        schema=ClassifierCreate,
        upload_key=keys.classifier_upload,
        record=classifier_record,
    )
    return verdict_response(record, response, ClassifierPublic.of(record))


@router.get("", response_model=ClassifiersPublic)
def list_classifiers(
    tenant: TenantDep,
    stores: StoresDep,
    paging: RecordPaging,
    name: Annotated[str | None, Query(description="Substring of the name")] = None,
    tag: str | None = None,
    status: str | None = None,
) -> ClassifiersPublic:
    page = list_registered(
        stores,
        ClassifierRecord,
        tenant,
        name=name,
        tag=tag,
        status=status,
        offset=paging.offset,
        limit=paging.limit,
    )
    return ClassifiersPublic(
        data=[ClassifierPublic.of(r) for r in page.items],
        count=page.count,
        next=paging.next(page.count),
    )


@router.get("/{id}", response_model=ClassifierPublic)
def read_classifier(classifier: ClassifierDep) -> ClassifierPublic:
    return ClassifierPublic.of(classifier)


@router.delete("/{id}", status_code=204, responses=problems(409))
def delete_classifier(classifier: ClassifierDep, stores: StoresDep) -> Response:
    delete_registered(stores, classifier, keys.classifier_prefix(classifier.tenant, classifier.id))
    return Response(status_code=204)


@router.get(
    "/{id}/file",
    response_class=StreamingResponse,
    responses={**binary("application/octet-stream"), **problems(409)},
)
async def download_classifier(classifier: ClassifierDep, stores: StoresDep) -> StreamingResponse:
    """The canonical copy made by the validation (not the bytes as uploaded)."""
    if classifier.state != UploadState.READY:
        raise Conflict(f"the classifier is {classifier.state}, not ready: no file to download")
    key = keys.classifier_canonical(classifier.tenant, classifier.id)
    size = await run_in_threadpool(stores.artifacts.size, key)
    stream = await run_in_threadpool(stores.artifacts.open, key)
    suffix = "onnx" if classifier.format == "onnx" else "safetensors"
    return StreamingResponse(
        blob_chunks(stream),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{classifier.id}.{suffix}"',
            "ETag": f'"{classifier.canonical_sha256 or ""}"',
        },
    )
