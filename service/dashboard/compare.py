"""The compare view: the figures and settings of 2–4 succeeded jobs side by side, with deltas
against the first (e.g. c3 against its baselines on one classifier)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from service import plots, report
from service.dashboard.session import PageTenant, page_router
from service.dashboard.templating import render
from service.dashboard.views import compare_rows, compare_settings
from service.deps import StoresDep
from service.records import ClassifierRecord, JobRecord, JobState
from service.registry import get_owned

router = page_router()

MAX_COMPARED = 4
CLASSES_SHOWN = 20


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    tenant: PageTenant,
    stores: StoresDep,
    jobs: Annotated[list[str] | None, Query(max_length=MAX_COMPARED)] = None,
) -> HTMLResponse:
    chosen = [get_owned(stores, JobRecord, id, tenant) for id in dict.fromkeys(jobs or [])]
    succeeded = [j for j in chosen if j.state == JobState.SUCCEEDED]
    figures = [report.overall_figures(report.job_metrics(stores.artifacts, j)) for j in succeeded]
    settings = [compare_settings(j) for j in succeeded]
    first = succeeded[0].params.classes if succeeded else []
    common = [c for c in first if all(c in j.params.classes for j in succeeded)]
    candidates = stores.jobs.list(
        JobRecord, tenant=tenant, state=JobState.SUCCEEDED, limit=200
    ).items
    classifiers = stores.jobs.list(ClassifierRecord, tenant=tenant).items
    return render(
        request,
        "compare.html",
        nav="compare",
        chosen=chosen,
        jobs=succeeded,
        unfinished=[j for j in chosen if j.state != JobState.SUCCEEDED],
        rows=compare_rows(figures),
        setting_rows=compare_rows(settings) if settings else [],
        histograms=[
            plots.histogram_svg(report.job_histogram(stores.artifacts, j), width=400, height=200)
            for j in succeeded
        ],
        common_classes=common[:CLASSES_SHOWN],
        classifier_names={c.id: c.name for c in classifiers},
        same_classifier=len({j.classifier_id for j in succeeded}) <= 1,
        candidates=candidates,
        max_compared=MAX_COMPARED,
    )
