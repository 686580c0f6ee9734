"""The audit dashboard: server-rendered pages over the same records, artifacts and access
control as the JSON API. No front-end build and nothing fetched from elsewhere: templates, one
CSS file and a few lines of JavaScript (live progress over the SSE endpoint) ship with the
service.

- `session`: who is looking (key, cookie, keyless loopback), login, same-origin forms, and
  friendly error pages;
- `templating`: Jinja2 templates, filters and the pages' security headers;
- `views`: what the pages show, computed from records and artifacts;
- `classifiers`, `jobs`, `compare`: the pages themselves.
Static files are served by Starlette's `StaticFiles` under /dashboard/static (`mount`).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from service.dashboard import classifiers, compare, jobs, session
from service.dashboard.templating import STATIC

router = APIRouter()
for pages in (session, classifiers, jobs, compare):
    router.include_router(pages.router)


def mount(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to `app`."""
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
