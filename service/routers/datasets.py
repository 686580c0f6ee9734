"""Reference datasets (real inputs for the distinctness metrics): upload, list, read, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from service.deps import CeleryDep, SettingsDep, StoresDep, TenantDep
from service.openapi import multipart_body, problems
from service.paging import RecordPaging
from service.records import DatasetRecord
from service.registry import (
    dataset_record,
    delete_registered,
    get_owned,
    list_registered,
    register_upload,
)
from service.routers.classifiers import verdict_response
from service.schemas import DatasetCreate, DatasetPublic, DatasetsPublic
from service.storage import keys

router = APIRouter(prefix="/datasets", tags=["datasets"])


def get_dataset(id: str, tenant: TenantDep, stores: StoresDep) -> DatasetRecord:
    return get_owned(stores, DatasetRecord, id, tenant)


DatasetDep = Annotated[DatasetRecord, Depends(get_dataset)]


@router.post(
    "",
    status_code=202,
    response_model=DatasetPublic,
    responses={201: {"model": DatasetPublic}, **problems(400, 415, 422, 429)},
    summary="Upload a reference set (`.npz` with `x`[, `y`], or a zip of PNGs + labels.csv)",
    openapi_extra=multipart_body(
        DatasetCreate, "Real images: an .npz with `x` [and `y`], or a zip of PNGs + labels.csv."
    ),
)
async def create_dataset(
    request: Request,
    response: Response,
    tenant: TenantDep,
    stores: StoresDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Any:
    """Stores the file and queues its validation (shape, dtype, range, size limits) in a
    sandboxed worker process; `Prefer: wait=N` waits for the verdict as for classifiers."""
    record = await register_upload(
        request,
        model=DatasetRecord,
        tenant=tenant,
        stores=stores,
        celery=celery,
        settings=settings,
        schema=DatasetCreate,
        upload_key=keys.dataset_upload,
        record=dataset_record,
    )
    return verdict_response(record, response, DatasetPublic.of(record))


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    tenant: TenantDep,
    stores: StoresDep,
    paging: RecordPaging,
    name: Annotated[str | None, Query(description="Substring of the name")] = None,
    tag: str | None = None,
    status: str | None = None,
) -> DatasetsPublic:
    page = list_registered(
        stores, DatasetRecord, tenant, name=name, tag=tag, status=status,
        offset=paging.offset, limit=paging.limit,
    )  # fmt: skip
    return DatasetsPublic(
        data=[DatasetPublic.of(r) for r in page.items],
        count=page.count,
        next=paging.next(page.count),
    )


@router.get("/{id}", response_model=DatasetPublic)
def read_dataset(dataset: DatasetDep) -> DatasetPublic:
    return DatasetPublic.of(dataset)


@router.delete("/{id}", status_code=204, responses=problems(409))
def delete_dataset(dataset: DatasetDep, stores: StoresDep) -> Response:
    delete_registered(stores, dataset, keys.dataset_prefix(dataset.tenant, dataset.id))
    return Response(status_code=204)
