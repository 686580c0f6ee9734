"""Logs that say whose work they are about: every line carries the request id, tenant and job
(or upload) id of the work in progress, as JSON (`C3_LOG_FORMAT=json`, one object a line, for a
log pipeline) or as text. The ids live in a context variable: the API binds them per request
(service.request_ids), and the worker per task and per claimed record (worker.app), so code
that logs never passes them along.

The context holds one mutable dict per unit of work: `annotate` fills it in place, so an id
learned in a FastAPI dependency that runs in a thread (a copy of the context) still reaches the
request's last log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

LogFormat = Literal["text", "json"]
FIELDS = ("request_id", "tenant", "job_id", "upload_id")
"""The ids a line may carry, in the order text lines show them."""

_ids: ContextVar[dict[str, str] | None] = ContextVar("c3_log_ids", default=None)


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[dict[str, str]]:
    """A new unit of work (a request, a task) carrying `ids` and those around it."""
    fresh = {**(_ids.get() or {}), **{k: v for k, v in ids.items() if v}}
    token = _ids.set(fresh)
    try:
        yield fresh
    finally:
        _ids.reset(token)


def annotate(**ids: str | None) -> None:
    """Add ids to the current unit of work (no-op outside one)."""
    current = _ids.get()
    if current is not None:
        current.update({k: v for k, v in ids.items() if v})


def current(name: str) -> str | None:
    return (_ids.get() or {}).get(name)


class _WithIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.c3_ids = dict(_ids.get() or {})
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "c3_ids", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        ids: dict[str, str] = getattr(record, "c3_ids", {})
        shown = " ".join(f"{k}={ids[k]}" for k in FIELDS if k in ids)
        return super().formatMessage(record) + (f" [{shown}]" if shown else "")


def configure(log_format: LogFormat, level: int = logging.INFO) -> None:
    """One handler on the root logger, in the chosen format; every library's lines (uvicorn,
    Celery) reach it, and carry the ids."""
    handler = logging.StreamHandler()
    handler.addFilter(_WithIds())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
