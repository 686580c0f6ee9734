"""The jobs pages: the list with the start form, a job's page, a class's samples and strip."""

from __future__ import annotations

import math
import secrets
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from service import downloads, plots, report, samples, side_by_side
from service.dashboard.session import PageTenant, SameOrigin, page_router
from service.dashboard.templating import render
from service.dashboard.views import WEIGHT_NAMES, confident_share, inversion_from_form
from service.deps import CeleryDep, SettingsDep, StoresDep
from service.effective import defaults_table, job_settings
from service.errors import Conflict, InvalidField, Problem
from service.findings import findings
from service.images import grid_png
from service.jobs import cancel, delete_job, draw_more, resume_and_enqueue, start_job
from service.read_cache import cache
from service.records import (
    FINISHED_JOB_STATES,
    ClassifierRecord,
    DatasetRecord,
    JobRecord,
    JobState,
    UploadState,
)
from service.registry import get_owned, parse_form
from service.sample_table import SampleTable
from service.schemas import SamplingCreate
from service.storage import ArtifactStore, Stores

router = page_router()

JOBS_PER_PAGE = 50
CLASSES_PER_PAGE = 20  # class strips on a job page
SAMPLES_PER_PAGE = 60  # thumbnails on a class page
STRIP_SAMPLES = 12  # thumbnails in a class's strip


def _pages(page: int, count: int, per_page: int) -> tuple[int, int]:
    pages = max(1, math.ceil(count / per_page))
    return min(max(page, 1), pages), pages


def _preselected_dataset(
    form: dict[str, str], newest_first: list[DatasetRecord], ready: list[ClassifierRecord]
) -> str:
    """The reference set the start form offers: the one sent back, else the newest ready one
    whose images fit the classifier the form preselects (without one the distinctness and
    detector figures would silently go missing)."""
    if "dataset_id" in form:
        return form["dataset_id"]
    chosen = next((c for c in ready if c.id == form.get("classifier_id")), None)
    shape = (chosen or ready[0]).input_shape if ready else None
    return next((d.id for d in newest_first if d.input_shape == shape), "")


def _jobs_page(
    request: Request,
    stores: Stores,
    tenant: str,
    *,
    page: int = 1,
    classifier_id: str | None = None,
    state: str | None = None,
    status: int = 200,
    error: str | None = None,
    form: dict[str, Any] | None = None,
) -> HTMLResponse:
    listed = stores.jobs.list(
        JobRecord,
        tenant=tenant,
        state=state or None,
        where={} if classifier_id is None else {"classifier_id": classifier_id},
        offset=(page - 1) * JOBS_PER_PAGE,
        limit=JOBS_PER_PAGE,
    )
    classifiers = stores.jobs.list(ClassifierRecord, tenant=tenant).items
    ready = [c for c in classifiers if c.state == UploadState.READY]
    datasets = sorted(
        stores.jobs.list(DatasetRecord, tenant=tenant, state=UploadState.READY).items,
        key=lambda d: d.created_at,
        reverse=True,
    )
    form = form or {}
    defaults = defaults_table()
    by_method = defaults.get(form.get("method", ""), defaults["c3"])
    return render(
        request,
        "jobs.html",
        status,
        nav="jobs",
        jobs=listed.items,
        count=listed.count,
        page=page,
        pages=max(1, math.ceil(listed.count / JOBS_PER_PAGE)),
        classifier_names={c.id: c.name for c in classifiers},
        ready_classifiers=ready,
        datasets=datasets,
        chosen_dataset=_preselected_dataset(form, datasets, ready),
        defaults=defaults,
        shown_defaults=by_method.get(form.get("recipe", ""), by_method["adaptive"]),
        filter_classifier=classifier_id,
        filter_state=state,
        states=[s.value for s in JobState],
        weight_names=WEIGHT_NAMES,
        confident_share=confident_share,
        error=error,
        form=form,
        idempotency_key=secrets.token_urlsafe(16),
        deleted=request.query_params.get("deleted"),
    )


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    tenant: PageTenant,
    stores: StoresDep,
    page: Annotated[int, Query(ge=1)] = 1,
    classifier_id: str | None = None,
    state: str | None = None,
) -> HTMLResponse:
    return _jobs_page(
        request, stores, tenant, page=page, classifier_id=classifier_id or None, state=state
    )


@router.post("/jobs", response_class=HTMLResponse, dependencies=[SameOrigin])
async def start_job_form(
    request: Request,
    tenant: PageTenant,
    stores: StoresDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        body = inversion_from_form(form)
        job = start_job(stores, celery, settings, tenant, body, form.get("idempotency_key") or None)
    except Problem as exc:
        where = f"{exc.field}: " if exc.field and not exc.detail.startswith(exc.field) else ""
        return _jobs_page(
            request, stores, tenant, status=exc.status, error=where + exc.detail, form=form
        )
    return RedirectResponse(f"/dashboard/jobs/{job.id}", status_code=303)


def owned_job(id: str, tenant: PageTenant, stores: StoresDep) -> JobRecord:
    return get_owned(stores, JobRecord, id, tenant)


PageJob = Annotated[JobRecord, Depends(owned_job)]


@router.post("/jobs/{id}/cancel", dependencies=[SameOrigin])
def cancel_job(job: PageJob, stores: StoresDep) -> Response:
    cancel(stores.jobs, job)
    return RedirectResponse(f"/dashboard/jobs/{job.id}", status_code=303)


@router.post("/jobs/{id}/resume", dependencies=[SameOrigin])
def resume_job(job: PageJob, stores: StoresDep, celery: CeleryDep) -> Response:
    resume_and_enqueue(stores, celery, job)
    return RedirectResponse(f"/dashboard/jobs/{job.id}", status_code=303)


@router.post("/jobs/{id}/delete", dependencies=[SameOrigin])
def delete_job_form(job: PageJob, stores: StoresDep) -> Response:
    delete_job(stores, job)
    return RedirectResponse(f"/dashboard/jobs?deleted={job.id}", status_code=303)


@router.post("/jobs/{id}/samples", response_class=HTMLResponse, dependencies=[SameOrigin])
async def draw_more_form(
    request: Request, job: PageJob, stores: StoresDep, celery: CeleryDep, settings: SettingsDep
) -> Response:
    """The job page's "draw more samples" form: a follow-up sampling job (no training)."""
    form = {k: str(v).strip() for k, v in (await request.form()).items()}
    fields: dict[str, Any] = {k: form[k] for k in ("samples_per_class", "seed") if form.get(k)}
    fields["sample_dropout"] = form.get("sample_dropout") == "on"
    try:
        follow_up = draw_more(stores, celery, settings, job, parse_form(SamplingCreate, fields))
    except Problem as exc:
        return _job_page(request, job, stores, status=exc.status, error=exc.detail, form=form)
    return RedirectResponse(f"/dashboard/jobs/{follow_up.id}", status_code=303)


@router.post("/jobs/{id}/baseline", response_class=HTMLResponse, dependencies=[SameOrigin])
async def start_baseline_form(
    request: Request, job: PageJob, stores: StoresDep, celery: CeleryDep, settings: SettingsDep
) -> Response:
    """The side-by-side view's "start plain c3" button: a new c3 job with a detector-aware
    job's settings, without its detectors."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        if not job.params.detectors:
            raise Conflict(f"job {job.id} is not detector-aware: it is its own plain baseline")
        plain = start_job(
            stores, celery, settings, job.tenant, side_by_side.baseline_request(job),
            form.get("idempotency_key") or None,
        )  # fmt: skip
    except Problem as exc:
        return _job_page(request, job, stores, status=exc.status, error=exc.detail)
    return RedirectResponse(f"/dashboard/jobs/{plain.id}", status_code=303)


@router.get("/jobs/{id}", response_class=HTMLResponse)
def job_page(
    request: Request,
    job: PageJob,
    stores: StoresDep,
    classes_page: Annotated[int, Query(ge=1)] = 1,
    baseline: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    """A job's page; a detector-aware job's sets it beside plain c3 (`baseline`: that job's
    id, else the newest on the same classifier and reference set)."""
    return _job_page(request, job, stores, classes_page=classes_page, baseline=baseline)


def _job_page(
    request: Request,
    job: JobRecord,
    stores: Stores,
    *,
    classes_page: int = 1,
    status: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
    baseline: str | None = None,
) -> HTMLResponse:
    classifier = stores.jobs.get(ClassifierRecord, job.classifier_id)
    dataset = stores.jobs.get(DatasetRecord, job.dataset_id) if job.dataset_id else None
    context: dict[str, Any] = {
        "nav": "jobs",
        "job": job,
        "settings": job_settings(job),
        "classifier": classifier if classifier and classifier.tenant == job.tenant else None,
        "dataset": dataset if dataset and dataset.tenant == job.tenant else None,
        "curves": report.job_curves(stores.jobs, job),
        "finished": job.state in FINISHED_JOB_STATES,
        "confident_share": confident_share(job),
        "error": error,
        "form": form or {},
    }
    if job.state == JobState.SUCCEEDED:
        metrics = report.job_metrics(stores.artifacts, job)
        figures = report.job_report_figures(stores.artifacts, job)
        ood = figures.ood if figures is not None else None
        classes = job.params.classes
        classes_page, pages = _pages(classes_page, len(classes), CLASSES_PER_PAGE)
        shown = classes[(classes_page - 1) * CLASSES_PER_PAGE : classes_page * CLASSES_PER_PAGE]
        try:
            paired = report.job_side_by_side(stores, job, baseline)
        except InvalidField as exc:  # a bad ?baseline=: say why, show the newest instead
            status, error = exc.status, f"baseline: {exc.detail}"
            paired = report.job_side_by_side(stores, job)
        context |= {
            "error": error,
            "side_by_side": report.side_by_side_rows(paired),
            "idempotency_key": secrets.token_urlsafe(16),
            "overall": report.grouped_figures(report.overall_figures(metrics)),
            "per_class": report.per_class_table(metrics, job.class_names),
            "histogram": plots.histogram_svg(report.job_histogram(stores.artifacts, job)),
            "has_reference": figures is not None and figures.msp.reference is not None,
            "evasion": report.evasion_rows(ood),
            "evasion_bars": report.evasion_bars(ood),
            "ood": ood,
            "findings": findings(
                metrics.overall,
                ood,
                metrics.confident_threshold,
                method=job.method,
                detectors=job.params.detectors or (),
                data_free=job.params.prior_source == "classifier",
            ),
            "shown_classes": shown,
            "classes_page": classes_page,
            "classes_pages": pages,
        }
    return render(request, "job.html", status, **context)


def sorted_by(table: SampleTable, indices: np.ndarray, sort: str) -> np.ndarray:
    """`indices` in index order, by confidence, or by confidence descending (ties by index)."""
    if sort == "index":
        return indices
    confidence = table.confidence[indices]
    order = np.lexsort((indices, -confidence if sort == "-confidence" else confidence))
    return indices[order]


@router.get("/jobs/{id}/classes/{cls}", response_class=HTMLResponse)
def class_page(
    request: Request,
    job: PageJob,
    cls: int,
    stores: StoresDep,
    page: Annotated[int, Query(ge=1)] = 1,
    sort: Annotated[str, Query(pattern="^(index|confidence|-confidence)$")] = "index",
) -> HTMLResponse:
    table = samples.table(stores.artifacts, job)
    indices = sorted_by(table, samples.class_indices(stores.artifacts, job, cls), sort)
    page, pages = _pages(page, len(indices), SAMPLES_PER_PAGE)
    shown = [
        table.record(int(i))
        for i in indices[(page - 1) * SAMPLES_PER_PAGE : page * SAMPLES_PER_PAGE]
    ]
    return render(
        request,
        "class_samples.html",
        nav="jobs",
        job=job,
        cls=cls,
        samples=[samples.to_public(job, r) for r in shown],
        count=len(indices),
        page=page,
        pages=pages,
        sort=sort,
    )


def class_strip(artifacts: ArtifactStore, job: JobRecord, cls: int) -> bytes:
    """The first samples of a class side by side, one PNG (one request per class)."""

    def build() -> bytes:
        indices = samples.class_indices(artifacts, job, cls)[:STRIP_SAMPLES]
        return grid_png([list(samples.pixels(artifacts, job, indices))], per_row=None, margin=0)

    return cache.get(job, f"strip-{cls}", build)


@router.get("/jobs/{id}/classes/{cls}/strip.png", response_class=Response)
def class_strip_png(job: PageJob, cls: int, request: Request, stores: StoresDep) -> Response:
    samples.require_succeeded(job)
    return downloads.immutable(request, class_strip(stores.artifacts, job, cls), "image/png")
