"""Every request gets an id: the caller's `X-Request-ID` when it is a sane token, else a new
one. It is bound to the request's log lines (service.logs), answered in the response's
`X-Request-ID`, kept in the records the request queues and sent with their Celery messages,
so the worker's lines about that work carry it too. One line per request closes it (method,
path, status, time), in place of uvicorn's access log, which runs outside the request's context.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger(__name__)


def request_id(given: str | None) -> str:
    """The caller's id if it is safe to log and echo (no spaces, quotes or newlines), else a
    new one."""
    return given if given is not None and _SANE.fullmatch(given) else secrets.token_hex(16)


class RequestIds:
    """Outermost middleware: even a request the gate refuses has an id and a log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER.lower().encode())
        rid = request_id(given.decode("latin-1") if given else None)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        with logs.bound(request_id=rid):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                log.info(
                    "%s %s %d %.1f ms", scope["method"], scope["path"], status,
                    (time.perf_counter() - start) * 1000,
                )  # fmt: skip
