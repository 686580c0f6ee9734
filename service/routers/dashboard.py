"""The audit dashboard: server-rendered pages over the same records, artifacts and access control
as the JSON API. No front-end build and nothing fetched from elsewhere: templates, one CSS file
and a few lines of JavaScript (live progress over the SSE endpoint) ship with the service.

Pages are HTML; a page's errors are friendly HTML pages with the problem's status (a client that
does not accept HTML gets problem+json). Without a valid key a page redirects to the login form,
which stores the key in an HttpOnly, SameSite=Strict cookie that the API also accepts. Forms
that change something are refused when they come from another origin.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import jinja2
from celery import Celery
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from PIL import Image

from service import plots, report, samples
from service.auth import client_is_local, open_access, tenant_for_key
from service.deps import CeleryDep, SettingsDep, StoresDep, current_tenant
from service.errors import InvalidField, NotFound, Problem, problem_response
from service.jobs import cancel, start_job
from service.records import CLASSIFIER, DATASET, FINISHED_JOB_STATES, JOB
from service.registry import (
    classifier_fields,
    dataset_fields,
    get_owned,
    parse_form,
    register_upload,
)
from service.routers.classifiers import to_public as classifier_public
from service.routers.datasets import to_public as dataset_public
from service.schemas import ClassifierCreate, DatasetCreate, InversionCreate
from service.settings import ServiceSettings
from service.storage import ArtifactStore, Stores, keys

log = logging.getLogger(__name__)

COOKIE = "c3_key"  # read by service.deps.bearer_key
HERE = Path(__file__).resolve().parent.parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

JOBS_PER_PAGE = 50
CLASSES_PER_PAGE = 20  # class strips on a job page
SAMPLES_PER_PAGE = 60  # thumbnails on a class page
STRIP_SAMPLES = 12  # thumbnails in a class's strip
MAX_COMPARED = 4

PHASES: dict[str, tuple[float, float]] = {
    "queued": (0.0, 0.0),
    "loading": (0.0, 0.02),
    "training": (0.02, 0.85),
    "sampling": (0.85, 0.95),
    "metrics": (0.95, 0.98),
    "saving": (0.98, 0.99),
    "done": (1.0, 1.0),
}
"""Where each phase sits on a job's overall progress bar (start, end); the page's script uses the
same table."""

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


class Forbidden(Problem):
    status, title, slug = 403, "Forbidden", "forbidden"


class LoginRequired(Exception):
    """No valid key (and no keyless local access): the page sends the browser to the login."""


# --- pages and their errors ------------------------------------------------------------------


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return not accept or "text/html" in accept or "*/*" in accept


class PageRoute(APIRoute):
    """A dashboard route: problems become friendly error pages (with the same status), a missing
    login becomes a redirect to the login form. Never a 500 with a stack trace."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handle(request)
            except LoginRequired:
                return login_redirect(request)
            except Problem as exc:
                if not wants_html(request):
                    raise
                return error_page(request, exc.status, exc.title, exc.detail)
            except RequestValidationError as exc:
                if not wants_html(request):
                    raise
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
                return error_page(request, 422, "Invalid input", f"{where}: {first.get('msg')}")

        return page


router = APIRouter(
    prefix="/dashboard", tags=["dashboard"], route_class=PageRoute, include_in_schema=False
)


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@lru_cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters |= {
        "time": _fmt_time,
        "pct": lambda v: "—" if v is None else f"{v:.1%}",
        "prob": lambda v: f"{v:.4f}" if v < 0.9999 else f"{v:.6f}",
        "tojson_attr": lambda v: json.dumps(v, separators=(",", ":")),
    }
    env.globals |= {"phases": PHASES, "overall_fraction": overall_fraction}
    return env


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("tenant", getattr(request.state, "tenant", None))
    context.setdefault("signed_in", COOKIE in request.cookies)
    context.setdefault("nav", "")
    html = environment().get_template(name).render(**context)
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    if status >= 500:
        log.error("dashboard %s: %s %s", request.url.path, status, detail)
    return render(request, "error.html", status, title=title, detail=detail, status=status)


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard: never an open redirect."""
    if not target:
        return "/dashboard"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/dashboard"):
        return "/dashboard"
    return target


def login_redirect(request: Request) -> Response:
    if not wants_html(request):
        return problem_response(
            request, 401, "Unauthorized", "unauthorized", "an API key is required",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303)
    if COOKIE in request.cookies:  # a revoked or unknown key: forget it
        response.delete_cookie(COOKIE, path="/")
    return response


def page_tenant(request: Request, settings: SettingsDep, stores: StoresDep) -> str:
    """The tenant of a page: the same rule as the API (key or keyless loopback), or login."""
    try:
        tenant = current_tenant(request, settings, stores)
    except Problem as exc:
        if exc.status == 401:
            raise LoginRequired from None
        raise
    request.state.tenant = tenant
    return tenant


PageTenant = Annotated[str, Depends(page_tenant)]


def same_origin(request: Request) -> None:
    """Refuse state-changing forms posted from another site. The cookie is SameSite=Strict,
    but keyless loopback access has no cookie to withhold, so the origin is checked too."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("this form was posted from another site")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")}
        if urlsplit(origin).netloc not in hosts:
            raise Forbidden(f"this form was posted from another origin ({origin})")


SameOrigin = Depends(same_origin)


# --- static files ------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _static(name: str) -> tuple[bytes, str]:
    path = STATIC / name
    if path.suffix not in STATIC_TYPES or path.parent != STATIC or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return path.read_bytes(), STATIC_TYPES[path.suffix]


@router.get("/static/{name}", response_class=Response)
def static_file(name: str, request: Request) -> Response:
    if not re.fullmatch(r"[a-z0-9_.-]+", name):
        raise NotFound(f"no static file {name!r}")
    data, media_type = _static(name)
    etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def inline_css() -> str:
    return _static("dashboard.css")[0].decode()


# --- login --------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, settings: SettingsDep, stores: StoresDep, next: str | None = None
) -> HTMLResponse:
    client = request.client.host if request.client else None
    keyless = open_access(settings, stores.jobs) and client_is_local(client)
    return render(request, "login.html", next=_safe_next(next), keyless=keyless, error=None)


@router.post("/login", response_class=HTMLResponse, dependencies=[SameOrigin])
async def login(request: Request, settings: SettingsDep, stores: StoresDep) -> Response:
    form = await request.form()
    key = str(form.get("key") or "").strip()
    target = _safe_next(str(form.get("next") or ""))
    tenant = tenant_for_key(stores.jobs, key) if key else None
    if tenant is None:
        return render(
            request,
            "login.html",
            401,
            next=target,
            keyless=False,
            error="Unknown API key." if key else "Enter an API key.",
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    log.info("dashboard login for tenant %s", tenant)
    return response


@router.post("/logout", dependencies=[SameOrigin])
def logout() -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("", response_class=HTMLResponse)
def home(tenant: PageTenant) -> Response:
    return RedirectResponse("/dashboard/jobs", status_code=303)


# --- classifiers --------------------------------------------------------------------------------


def _registry_page(
    request: Request, stores: Stores, tenant: str, status: int = 200, error: str | None = None
) -> HTMLResponse:
    docs = stores.jobs.list(CLASSIFIER, tenant=tenant).items
    datasets = stores.jobs.list(DATASET, tenant=tenant).items
    job_counts: dict[str, int] = {}
    for job in stores.jobs.list(JOB, tenant=tenant).items:
        job_counts[job["classifier_id"]] = job_counts.get(job["classifier_id"], 0) + 1
    return render(
        request,
        "classifiers.html",
        status,
        nav="classifiers",
        classifiers=[classifier_public(d) for d in docs],
        datasets=[dataset_public(d) for d in datasets],
        job_counts=job_counts,
        error=error,
        uploaded=request.query_params.get("uploaded"),
        validating=any(d["state"] == "validating" for d in [*docs, *datasets]),
    )


@router.get("/classifiers", response_class=HTMLResponse)
def classifiers_page(request: Request, tenant: PageTenant, stores: StoresDep) -> HTMLResponse:
    return _registry_page(request, stores, tenant)


async def _upload(
    request: Request,
    kind: str,
    tenant: str,
    stores: Stores,
    celery: Celery,
    settings: ServiceSettings,
) -> Response:
    schema: Any = ClassifierCreate if kind == CLASSIFIER else DatasetCreate
    upload_key = keys.classifier_upload if kind == CLASSIFIER else keys.dataset_upload
    fields = classifier_fields if kind == CLASSIFIER else dataset_fields
    try:
        doc = await register_upload(
            request, kind=kind, tenant=tenant, stores=stores, celery=celery, settings=settings,
            schema=schema, upload_key=upload_key, fields=fields,
        )  # fmt: skip
    except Problem as exc:
        return _registry_page(request, stores, tenant, exc.status, exc.detail)
    return RedirectResponse(f"/dashboard/classifiers?uploaded={doc['id']}", status_code=303)


@router.post("/classifiers", response_class=HTMLResponse, dependencies=[SameOrigin])
async def upload_classifier(
    request: Request, tenant: PageTenant, stores: StoresDep, celery: CeleryDep,
    settings: SettingsDep,
) -> Response:  # fmt: skip
    return await _upload(request, CLASSIFIER, tenant, stores, celery, settings)


@router.post("/datasets", response_class=HTMLResponse, dependencies=[SameOrigin])
async def upload_dataset(
    request: Request, tenant: PageTenant, stores: StoresDep, celery: CeleryDep,
    settings: SettingsDep,
) -> Response:  # fmt: skip
    return await _upload(request, DATASET, tenant, stores, celery, settings)


# --- jobs ---------------------------------------------------------------------------------------


def overall_fraction(job: dict[str, Any]) -> float:
    """A job's progress as one fraction over its phases (see PHASES)."""
    if job["state"] == "succeeded":
        return 1.0
    progress = job.get("progress")
    if not progress:
        return 0.0
    start, end = PHASES.get(progress.get("phase", ""), (0.0, 0.0))
    return start + (end - start) * float(progress.get("fraction") or 0.0)


def confident_share(job: dict[str, Any]) -> float | None:
    """The job's confident share: the final figure when done, the running one while training."""
    figures = report.flatten(job.get("metrics") or {})
    value = figures.get(report.CONFIDENT_SHARE)
    if isinstance(value, int | float):
        return float(value)
    progress = job.get("progress") or {}
    running = progress.get("confident_share")
    return float(running) if isinstance(running, int | float) else None


def _names(stores: Stores, kind: str, tenant: str) -> dict[str, str]:
    return {d["id"]: d["name"] for d in stores.jobs.list(kind, tenant=tenant).items}


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
    def match(doc: dict[str, Any]) -> bool:
        return classifier_id is None or doc["classifier_id"] == classifier_id

    listed = stores.jobs.list(
        JOB,
        tenant=tenant,
        state=state or None,
        match=match,
        offset=(page - 1) * JOBS_PER_PAGE,
        limit=JOBS_PER_PAGE,
    )
    classifier_docs = stores.jobs.list(CLASSIFIER, tenant=tenant).items
    datasets = [d for d in stores.jobs.list(DATASET, tenant=tenant).items if d["state"] == "ready"]
    return render(
        request,
        "jobs.html",
        status,
        nav="jobs",
        jobs=listed.items,
        count=listed.count,
        page=page,
        pages=max(1, math.ceil(listed.count / JOBS_PER_PAGE)),
        classifier_names={d["id"]: d["name"] for d in classifier_docs},
        ready_classifiers=[d for d in classifier_docs if d["state"] == "ready"],
        datasets=datasets,
        filter_classifier=classifier_id,
        filter_state=state,
        confident_share=confident_share,
        error=error,
        form=form or {},
        idempotency_key=secrets.token_urlsafe(16),
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


WEIGHTS = ("kl", "ce", "cosine", "orthogonality", "tv")


def inversion_from_form(form: dict[str, str]) -> InversionCreate:
    """The start form's fields as a request: blanks take the defaults, `classes` is a list
    like "0, 3, 7", loss weights come as `w_<name>`."""
    fields: dict[str, Any] = {}
    for name in ("classifier_id", "method", "samples_per_class", "steps", "batch_size", "seed",
                 "dataset_id"):  # fmt: skip
        value = form.get(name, "").strip()
        if value:
            fields[name] = value
    classes = form.get("classes", "").strip()
    if classes:
        parts = [p for p in re.split(r"[\s,]+", classes) if p]
        if not all(p.isdigit() for p in parts):
            raise InvalidField("class indices separated by commas, e.g. 0, 3, 7", field="classes")
        fields["classes"] = [int(p) for p in parts]
    weights = {w: form[f"w_{w}"].strip() for w in WEIGHTS if form.get(f"w_{w}", "").strip()}
    if weights:
        fields["loss_weights"] = weights
    fields["sample_dropout"] = form.get("sample_dropout") in ("on", "true", "1")
    return parse_form(InversionCreate, fields)


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
    return RedirectResponse(f"/dashboard/jobs/{job['id']}", status_code=303)


def owned_job(id: str, tenant: PageTenant, stores: StoresDep) -> dict[str, Any]:
    return get_owned(stores, JOB, id, tenant)


PageJob = Annotated[dict[str, Any], Depends(owned_job)]


@router.post("/jobs/{id}/cancel", dependencies=[SameOrigin])
def cancel_job(job: PageJob, stores: StoresDep) -> Response:
    cancel(stores.jobs, job)
    return RedirectResponse(f"/dashboard/jobs/{job['id']}", status_code=303)


def _pages(page: int, count: int, per_page: int) -> tuple[int, int]:
    pages = max(1, math.ceil(count / per_page))
    return min(max(page, 1), pages), pages


@router.get("/jobs/{id}", response_class=HTMLResponse)
def job_page(
    request: Request,
    job: PageJob,
    stores: StoresDep,
    classes_page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    classifier = stores.jobs.get(CLASSIFIER, job["classifier_id"])
    dataset = stores.jobs.get(DATASET, job["dataset_id"]) if job.get("dataset_id") else None
    context: dict[str, Any] = {
        "nav": "jobs",
        "job": job,
        "classifier": classifier if classifier and classifier["tenant"] == job["tenant"] else None,
        "dataset": dataset if dataset and dataset["tenant"] == job["tenant"] else None,
        "curves": report.training_curves(stores.jobs, job).panels(),
        "finished": job["state"] in FINISHED_JOB_STATES,
        "confident_share": confident_share(job),
    }
    if job["state"] == "succeeded":
        metrics = report.job_metrics(stores.artifacts, job)
        figures = report.job_report_figures(stores.artifacts, job) or {}
        ood = report.EvasionPublic.model_validate(figures["ood"]) if figures.get("ood") else None
        classes = job["params"]["classes"]
        classes_page, pages = _pages(classes_page, len(classes), CLASSES_PER_PAGE)
        shown = classes[(classes_page - 1) * CLASSES_PER_PAGE : classes_page * CLASSES_PER_PAGE]
        context |= {
            "overall": report.grouped_figures(report.overall_figures(metrics)),
            "per_class": report.per_class_table(metrics, job["class_names"]),
            "histogram": plots.histogram_svg(report.job_histogram(stores.artifacts, job)),
            "has_reference": (figures.get("msp") or {}).get("reference") is not None,
            "evasion": report.evasion_rows(ood),
            "evasion_bars": report.evasion_bars(ood),
            "ood": ood,
            "shown_classes": shown,
            "classes_page": classes_page,
            "classes_pages": pages,
        }
    return render(request, "job.html", **context)


def _class_records(artifacts: ArtifactStore, job: dict[str, Any], cls: int) -> list[dict[str, Any]]:
    def build() -> list[dict[str, Any]]:
        return [r for r in samples.sample_index(artifacts, job) if r["target"] == cls]

    return samples.cached(job, f"class-{cls}", build)


def _check_class(job: dict[str, Any], cls: int) -> None:
    if cls not in job["params"]["classes"]:
        raise NotFound(f"job {job['id']} has no samples of class {cls}")


SORTS = {
    "index": (lambda r: r["index"]),
    "confidence": (lambda r: (r["confidence"], r["index"])),
    "-confidence": (lambda r: (-r["confidence"], r["index"])),
}


@router.get("/jobs/{id}/classes/{cls}", response_class=HTMLResponse)
def class_page(
    request: Request,
    job: PageJob,
    cls: int,
    stores: StoresDep,
    page: Annotated[int, Query(ge=1)] = 1,
    sort: Annotated[str, Query(pattern="^(index|confidence|-confidence)$")] = "index",
) -> HTMLResponse:
    samples.require_succeeded(job)
    _check_class(job, cls)
    records = _class_records(stores.artifacts, job, cls)
    if sort != "index":
        records = samples.cached(
            job, f"class-{cls}-{sort}", lambda: sorted(records, key=SORTS[sort])
        )
    page, pages = _pages(page, len(records), SAMPLES_PER_PAGE)
    shown = records[(page - 1) * SAMPLES_PER_PAGE : page * SAMPLES_PER_PAGE]
    return render(
        request,
        "class_samples.html",
        nav="jobs",
        job=job,
        cls=cls,
        samples=[samples.to_public(job, r) for r in shown],
        count=len(records),
        page=page,
        pages=pages,
        sort=sort,
    )


def class_strip(artifacts: ArtifactStore, job: dict[str, Any], cls: int) -> bytes:
    """The first samples of a class side by side, one PNG (one request per class)."""

    def build() -> bytes:
        records = _class_records(artifacts, job, cls)[:STRIP_SAMPLES]
        if not records:
            raise NotFound(f"job {job['id']} has no samples of class {cls}")
        images = [
            Image.open(io.BytesIO(samples.sample_png(artifacts, job, r["index"]))) for r in records
        ]
        pad = 2
        w, h = max(i.width for i in images), max(i.height for i in images)
        mode = "RGB" if any(i.mode not in ("L", "1") for i in images) else "L"
        strip = Image.new(mode, (len(images) * (w + pad) - pad, h), "white")
        for n, image in enumerate(images):
            strip.paste(image.convert(mode), (n * (w + pad), 0))
        out = io.BytesIO()
        strip.save(out, format="PNG")
        return out.getvalue()

    return samples.cached(job, f"strip-{cls}", build)


@router.get("/jobs/{id}/classes/{cls}/strip.png", response_class=Response)
def class_strip_png(job: PageJob, cls: int, request: Request, stores: StoresDep) -> Response:
    samples.require_succeeded(job)
    _check_class(job, cls)
    return samples.immutable(request, class_strip(stores.artifacts, job, cls), "image/png")


# --- compare ----------------------------------------------------------------------------------


def _compare_rows(figures: list[dict[str, Any]]) -> list[Any]:
    """Rows of (label, [(value, delta vs the first job), ...]) over every figure any job has."""
    keys_in_order: list[str] = []
    for f in figures:
        keys_in_order += [k for k in f if k not in keys_in_order]
    rows = []
    base = figures[0] if figures else {}
    for key in keys_in_order:
        cells = []
        for i, f in enumerate(figures):
            value = f.get(key)
            delta = ""
            b = base.get(key)
            if (
                i > 0
                and isinstance(value, int | float)
                and isinstance(b, int | float)
                and not isinstance(value, bool)
            ):
                delta = report.fmt_delta(key, float(value) - float(b))
            cells.append((report.fmt(key, value), delta))
        rows.append((report.label_of(key), cells))
    return rows


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    tenant: PageTenant,
    stores: StoresDep,
    jobs: Annotated[list[str] | None, Query(max_length=MAX_COMPARED)] = None,
) -> HTMLResponse:
    chosen = [get_owned(stores, JOB, id, tenant) for id in dict.fromkeys(jobs or [])]
    succeeded = [j for j in chosen if j["state"] == "succeeded"]
    figures = [report.overall_figures(report.job_metrics(stores.artifacts, j)) for j in succeeded]
    settings = [
        {"classifier": j["classifier_id"], "method": j["method"], "kind": j["kind"],
         **{k: v for k, v in j["params"].items() if k != "classes"},
         "classes": ", ".join(map(str, j["params"]["classes"]))}
        for j in succeeded
    ]  # fmt: skip
    setting_rows = _compare_rows(settings) if settings else []
    common = [c for c in (succeeded[0]["params"]["classes"] if succeeded else [])
              if all(c in j["params"]["classes"] for j in succeeded)]  # fmt: skip
    candidates = stores.jobs.list(JOB, tenant=tenant, state="succeeded", limit=200).items
    return render(
        request,
        "compare.html",
        nav="compare",
        chosen=chosen,
        jobs=succeeded,
        unfinished=[j for j in chosen if j["state"] != "succeeded"],
        rows=_compare_rows(figures),
        setting_rows=setting_rows,
        histograms=[
            plots.histogram_svg(report.job_histogram(stores.artifacts, j), width=400, height=200)
            for j in succeeded
        ],
        common_classes=common[:CLASSES_PER_PAGE],
        classifier_names=_names(stores, CLASSIFIER, tenant),
        same_classifier=len({j["classifier_id"] for j in succeeded}) <= 1,
        candidates=candidates,
        max_compared=MAX_COMPARED,
    )
