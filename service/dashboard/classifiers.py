"""The classifiers page: classifiers and reference sets, their upload forms."""

from __future__ import annotations

from collections import Counter
from typing import Any

from celery import Celery
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from service.dashboard.session import PageTenant, SameOrigin, page_router
from service.dashboard.templating import render
from service.deps import CeleryDep, SettingsDep, StoresDep
from service.errors import Problem
from service.records import ClassifierRecord, DatasetRecord, JobRecord, UploadState
from service.registry import classifier_record, dataset_record, register_upload
from service.schemas import ClassifierCreate, ClassifierPublic, DatasetCreate, DatasetPublic
from service.settings import ServiceSettings
from service.storage import Stores, keys

router = page_router()


def _registry_page(
    request: Request, stores: Stores, tenant: str, status: int = 200, error: str | None = None
) -> HTMLResponse:
    classifiers = stores.jobs.list(ClassifierRecord, tenant=tenant).items
    datasets = stores.jobs.list(DatasetRecord, tenant=tenant).items
    jobs = stores.jobs.list(JobRecord, tenant=tenant).items
    return render(
        request,
        "classifiers.html",
        status,
        nav="classifiers",
        classifiers=[ClassifierPublic.of(r) for r in classifiers],
        datasets=[DatasetPublic.of(r) for r in datasets],
        job_counts=Counter(job.classifier_id for job in jobs),
        error=error,
        uploaded=request.query_params.get("uploaded"),
        validating=any(r.state == UploadState.VALIDATING for r in [*classifiers, *datasets]),
    )


@router.get("/classifiers", response_class=HTMLResponse)
def classifiers_page(request: Request, tenant: PageTenant, stores: StoresDep) -> HTMLResponse:
    return _registry_page(request, stores, tenant)


async def _upload(
    request: Request,
    model: type[ClassifierRecord] | type[DatasetRecord],
    tenant: str,
    stores: Stores,
    celery: Celery,
    settings: ServiceSettings,
) -> Response:
    args: dict[str, Any] = {
        "request": request, "tenant": tenant, "stores": stores, "celery": celery,
        "settings": settings,
    }  # fmt: skip
    try:
        if model is ClassifierRecord:
            record: ClassifierRecord | DatasetRecord = await register_upload(
                **args, model=ClassifierRecord, schema=ClassifierCreate,
                upload_key=keys.classifier_upload, record=classifier_record,
            )  # fmt: skip
        else:
            record = await register_upload(
                **args, model=DatasetRecord, schema=DatasetCreate,
                upload_key=keys.dataset_upload, record=dataset_record,
            )  # fmt: skip
    except Problem as exc:
        return _registry_page(request, stores, tenant, exc.status, exc.detail)
    return RedirectResponse(f"/dashboard/classifiers?uploaded={record.id}", status_code=303)


@router.post("/classifiers", response_class=HTMLResponse, dependencies=[SameOrigin])
async def upload_classifier(
    request: Request, tenant: PageTenant, stores: StoresDep, celery: CeleryDep,
    settings: SettingsDep,
) -> Response:  # fmt: skip
    return await _upload(request, ClassifierRecord, tenant, stores, celery, settings)


@router.post("/datasets", response_class=HTMLResponse, dependencies=[SameOrigin])
async def upload_dataset(
    request: Request, tenant: PageTenant, stores: StoresDep, celery: CeleryDep,
    settings: SettingsDep,
) -> Response:  # fmt: skip
    return await _upload(request, DatasetRecord, tenant, stores, celery, settings)
