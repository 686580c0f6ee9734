"""The request gate: what every request meets before the app reads a byte of its body.

1. Authentication first. A request that sends a body (POST, PUT, PATCH) to a route that acts
   for a tenant is refused without a valid key (401 problem+json; the dashboard's login
   redirect for its pages) before its body is read, so a 300 MB body from a stranger costs
   nothing.
2. Bounded bodies. A declared `Content-Length` over the route's limit is refused at once (413),
   and a body that streams past it is cut off at the limit, never buffered whole: uploads get
   `max_upload_bytes` (plus room for the form fields), every other body `max_body_bytes`.

Why not FastAPI's own `max_body_size`: it answers a declared oversize in text/plain ahead of
the app's problem+json handlers, and it cannot put authentication before the body.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import authenticate
from service.errors import PayloadTooLarge, Problem, problem_response
from service.uploads import FORM_OVERHEAD

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UPLOAD_ROUTES = frozenset(
    {
        ("POST", "/classifiers"),
        ("POST", "/datasets"),
        ("POST", "/dashboard/classifiers"),
        ("POST", "/dashboard/datasets"),
    }
)
"""Routes whose body is a multipart upload (service.uploads parses them as they stream)."""
OPEN_ROUTES = frozenset({("POST", "/dashboard/login"), ("POST", "/dashboard/logout")})
"""Routes with a body that need no tenant."""


class RequestGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        route = (scope["method"], scope["path"].rstrip("/") or "/")
        try:
            if route not in OPEN_ROUTES:
                state = request.app.state
                authenticate(request, state.settings, state.stores.jobs)
            limit, too_large = self._limit(request, route)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise too_large
        except Problem as exc:
            await self._refuse(request, exc, scope, receive, send)
            return
        await self.app(scope, _bounded(receive, limit, too_large), send)

    @staticmethod
    def _limit(request: Request, route: tuple[str, str]) -> tuple[int, PayloadTooLarge]:
        """The route's body limit, and the refusal past it."""
        settings = request.app.state.settings
        if route in UPLOAD_ROUTES:
            limit = int(settings.max_upload_bytes)
            return limit + FORM_OVERHEAD, PayloadTooLarge(
                f"the upload is larger than the limit of {limit} bytes"
            )
        limit = int(settings.max_body_bytes)
        return limit, PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")

    @staticmethod
    async def _refuse(
        request: Request, exc: Problem, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if exc.status == 401 and scope["path"].startswith("/dashboard"):
            from service.dashboard.session import login_redirect

            response = login_redirect(request)
        else:
            response = problem_response(
                request, exc.status, exc.title, exc.slug, exc.detail, headers=exc.headers
            )
        await response(scope, receive, send)


def _bounded(receive: Receive, limit: int, too_large: PayloadTooLarge) -> Receive:
    """`receive`, refusing the body as soon as it passes `limit` bytes."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large
        return message

    return bounded
