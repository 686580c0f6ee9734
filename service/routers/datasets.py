"""Reference datasets (real inputs for the distinctness metrics): upload, list, read, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from service.deps import CeleryDep, SettingsDep, StoresDep, TenantDep
from service.records import DATASET
from service.registry import (
    dataset_fields,
    delete_registered,
    get_owned,
    list_registered,
    register_upload,
)
from service.routers.classifiers import verdict_response
from service.schemas import DatasetCreate, DatasetPublic, DatasetsPublic
from service.storage import keys

router = APIRouter(prefix="/datasets", tags=["datasets"])


def get_dataset(id: str, tenant: TenantDep, stores: StoresDep) -> dict[str, Any]:
    return get_owned(stores, DATASET, id, tenant)


DatasetDep = Annotated[dict[str, Any], Depends(get_dataset)]


def to_public(doc: dict[str, Any]) -> DatasetPublic:
    return DatasetPublic(
        **{k: v for k, v in doc.items() if k in DatasetPublic.model_fields},
        status=doc["state"],
        reason=(doc.get("error") or {}).get("detail"),
        links={"self": f"/datasets/{doc['id']}"},
    )


@router.post(
    "",
    status_code=202,
    response_model=DatasetPublic,
    responses={201: {"model": DatasetPublic}},
    summary="Upload a reference set (`.npz` with `x`[, `y`], or a zip of PNGs + labels.csv)",
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
    doc = await register_upload(
        request,
        kind=DATASET,
        tenant=tenant,
        stores=stores,
        celery=celery,
        settings=settings,
        schema=DatasetCreate,
        upload_key=keys.dataset_upload,
        fields=dataset_fields,
    )
    return verdict_response(doc, response, to_public(doc))


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    tenant: TenantDep,
    stores: StoresDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    name: str | None = None,
    tag: str | None = None,
    status: str | None = None,
) -> DatasetsPublic:
    page = list_registered(
        stores, DATASET, tenant, name=name, tag=tag, status=status, offset=offset, limit=limit
    )
    return DatasetsPublic(data=[to_public(d) for d in page.items], count=page.count)


@router.get("/{id}", response_model=DatasetPublic)
def read_dataset(dataset: DatasetDep) -> DatasetPublic:
    return to_public(dataset)


@router.delete("/{id}", status_code=204)
def delete_dataset(dataset: DatasetDep, stores: StoresDep) -> Response:
    delete_registered(
        stores, DATASET, dataset, keys.dataset_prefix(dataset["tenant"], dataset["id"])
    )
    return Response(status_code=204)
