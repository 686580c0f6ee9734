"""Who is looking at a dashboard page, and what happens when something goes wrong there.

A page takes its tenant by the API's own rule (key or keyless loopback); without one the
browser is sent to the login form, which stores the key in an HttpOnly, SameSite=Strict cookie
that the API also accepts. Forms that change something are refused when they come from another
origin. A page's errors are friendly HTML pages with the problem's status (a client that does
not accept HTML gets problem+json), never a 500 with a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from service.auth import SESSION_COOKIE as COOKIE
from service.auth import authenticate, client_is_local, open_access, tenant_for_key
from service.dashboard.templating import render
from service.deps import SettingsDep, StoresDep
from service.errors import Problem, problem_response

log = logging.getLogger(__name__)


class Forbidden(Problem):
    status, title, slug = 403, "Forbidden", "forbidden"


class LoginRequired(Exception):
    """No valid key (and no keyless local access): the page sends the browser to the login."""


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return not accept or "text/html" in accept or "*/*" in accept


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    if status >= 500:
        log.error("dashboard %s: %s %s", request.url.path, status, detail)
    return render(request, "error.html", status, title=title, detail=detail, status=status)


class PageRoute(APIRoute):
    """A dashboard route: problems become friendly error pages (with the same status), a missing
    login becomes a redirect to the login form."""

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


def page_router() -> APIRouter:
    """A router for dashboard pages: friendly errors, out of the OpenAPI document."""
    return APIRouter(
        prefix="/dashboard", tags=["dashboard"], route_class=PageRoute, include_in_schema=False
    )


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
        tenant = authenticate(request, settings, stores.jobs)
    except Problem as exc:
        if exc.status == 401:
            raise LoginRequired from None
        raise
    request.state.tenant = tenant
    return tenant


PageTenant = Annotated[str, Depends(page_tenant)]


def same_origin(request: Request, settings: SettingsDep) -> None:
    """Refuse state-changing forms unless they provably come from this dashboard. The cookie
    is SameSite=Strict, but keyless loopback access has no cookie to withhold, so the browser's
    own word is required: `Sec-Fetch-Site: same-origin`, or an `Origin` naming this host (a
    proxy's `X-Forwarded-Host` counts only when the service is told to trust it)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        raise Forbidden(f"this form was posted from another site ({fetch_site})")
    origin = request.headers.get("origin")
    if origin is None:
        if fetch_site is None:
            raise Forbidden(
                "this form says neither where it was posted from (Origin) nor how "
                "(Sec-Fetch-Site): post it from the dashboard in a browser"
            )
        return
    hosts = {request.headers.get("host")}
    if settings.trust_forwarded_host:
        hosts.add(request.headers.get("x-forwarded-host"))
    if origin == "null" or urlsplit(origin).netloc not in hosts:
        raise Forbidden(f"this form was posted from another origin ({origin})")


SameOrigin = Depends(same_origin)

router = page_router()


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
