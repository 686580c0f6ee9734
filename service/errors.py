"""Every error the API returns is RFC 9457 problem+json, raised as a named exception and mapped
here, in one place. `detail` says what is wrong and what to do; `field` names the input at
fault when there is one."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import ProblemPublic
from service.storage import ArtifactNotFound, StoreUnavailable, is_disk_full

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(StarletteHTTPException):
    """An error with a status, a title and a detail for the user. An HTTP exception, so that
    it passes through FastAPI's own handling unchanged (a problem raised while a request body
    streams in is not turned into "There was an error parsing the body")."""

    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(self.status, detail, headers)
        self.detail, self.field, self.headers, self.extra = detail, field, headers, extra

    def __str__(self) -> str:
        return self.detail


class BadRequest(Problem):
    pass


class Unauthorized(Problem):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class NotFound(Problem):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class RangeNotSatisfiable(Problem):
    status, title, slug = 416, "Range not satisfiable", "range-not-satisfiable"


class PayloadTooLarge(Problem):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnsupportedMediaType(Problem):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class InvalidField(Problem):
    status, title, slug = 422, "Invalid input", "invalid-input"


class Unavailable(Problem):
    status, title, slug = 503, "Service unavailable", "unavailable"


def problem_response(
    request: Request,
    status: int,
    title: str,
    slug: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = ProblemPublic(
        type=f"/problems/{slug}",
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        **{k: v for k, v in extra.items() if v is not None},
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def _field_error(error: Any) -> dict[str, Any]:
    """A request validation error as {field, detail}; a body that is not JSON at all names the
    body, not the character position pydantic reports."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        reason = (error.get("ctx") or {}).get("error") or "malformed"
        return {"field": "body", "detail": f"not valid JSON ({reason}{where}): send a JSON object"}
    return {"field": _field_name(loc), "detail": error.get("msg", "invalid")}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request,
            exc.status,
            exc.title,
            exc.slug,
            exc.detail,
            headers=exc.headers,
            field=exc.field,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(e) for e in exc.errors()]
        first = errors[0] if errors else {"field": None, "detail": "invalid request"}
        return problem_response(
            request,
            422,
            "Invalid input",
            "invalid-input",
            f"{first['field']}: {first['detail']}" if first["field"] else str(first["detail"]),
            field=first["field"],
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        detail = str(exc.detail) if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return problem_response(
            request,
            exc.status_code,
            title,
            title.lower().replace(" ", "-"),
            detail,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ArtifactNotFound)
    async def on_missing_file(request: Request, exc: ArtifactNotFound) -> JSONResponse:
        log.warning("missing blob %s for %s", exc, request.url.path)
        return problem_response(
            request,
            404,
            "Not found",
            "not-found",
            "a file of this resource is gone (it was being deleted?): delete the resource "
            "again, or start it anew",
        )

    def internal_error(request: Request) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            500,
            "Internal error",
            "internal",
            "an unexpected error occurred; it has been logged",
        )

    def disk_full(request: Request, exc: Exception) -> JSONResponse:
        log.error("disk full on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(
            request,
            507,
            "Insufficient storage",
            "disk-full",
            "the service's disk is full: nothing was stored; retry later (deleting jobs you "
            "no longer need frees space)",
            headers={"Retry-After": "60"},
        )

    @app.exception_handler(OSError)
    async def on_os_error(request: Request, exc: OSError) -> JSONResponse:
        if is_disk_full(exc):
            return disk_full(request, exc)
        return internal_error(request)

    @app.exception_handler(StoreUnavailable)
    async def on_store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        if is_disk_full(exc):
            return disk_full(request, exc)
        log.error("storage unavailable: %s", exc)
        return problem_response(
            request,
            503,
            "Service unavailable",
            "unavailable",
            f"storage is unavailable, retry shortly ({exc})",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request)
