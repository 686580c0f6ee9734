"""The audit report of a finished job: JSON by default, or one self-contained HTML page (every
image inlined) to attach to a review, with `Accept: text/html` or `?format=html`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from service import report
from service.dashboard.templating import inline_css, templates
from service.deps import StoresDep
from service.openapi import problems
from service.routers.inversions import JobDep

router = APIRouter(prefix="/inversions", tags=["inversions"])

REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'"
"""The HTML report may load nothing: the policy proves it is self-contained."""


def _q(accept: str, media_type: str) -> float:
    """The quality the Accept header gives `media_type` (its own entry, else a wildcard)."""
    best, best_rank = 0.0, -1
    major = media_type.split("/")[0]
    for part in accept.split(","):
        kind, *params = [p.strip() for p in part.split(";")]
        rank = {media_type: 2, f"{major}/*": 1, "*/*": 0}.get(kind.lower(), -1)
        if rank <= best_rank:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best, best_rank = q, rank
    return best


def prefers_html(accept: str) -> bool:
    return bool(accept) and _q(accept, "text/html") > _q(accept, "application/json")


@router.get(
    "/{id}/report",
    response_model=report.ReportPublic,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **problems(409)},
)
def read_report(
    job: JobDep,
    request: Request,
    response: Response,
    stores: StoresDep,
    format: Annotated[Literal["json", "html"] | None, Query()] = None,
    download: bool = False,
    baseline: Annotated[
        str | None,
        Query(
            max_length=64,
            description="A detector-aware job's report: the plain c3 job (same classifier and "
            "reference set) to set beside it; the newest such job when omitted.",
        ),
    ] = None,
) -> Any:
    """The model, the job's settings, its metrics, the confidence histogram beside the real
    reference data, and the OOD-detector evasion table: the share of counterfeits each detector
    accepts at the threshold that keeps 95% of real reference data, and its AUROC. A
    detector-aware job's report sets it beside plain c3 (`side_by_side`)."""
    html = format == "html" or (format is None and prefers_html(request.headers.get("accept", "")))
    response.headers["Vary"] = "Accept"
    if not html:
        return report.build_report(stores, job, baseline)
    context = report.report_context(stores, job, baseline)
    body = templates().get_template("report.html").render(**context, css=inline_css())
    headers = {
        "Content-Security-Policy": REPORT_CSP,
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept",
    }
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{job.id}-report.html"'
    return HTMLResponse(body, headers=headers)
