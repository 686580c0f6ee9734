"""Per-process worker state: settings, stores and the Celery app, built once per process.

Celery's prefork pool forks children from the worker's parent; a connection (SQLite, Redis)
must not cross a fork, so the state is keyed by process id and built lazily in each process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import Celery

from service.storage import Stores, open_stores
from worker.settings import WorkerSettings, get_worker_settings


@dataclass
class WorkerContext:
    settings: WorkerSettings
    stores: Stores
    celery: Celery


_contexts: dict[int, WorkerContext] = {}
_app: Celery | None = None


def bind_app(app: Celery) -> None:
    global _app
    _app = app


def get_context() -> WorkerContext:
    pid = os.getpid()
    ctx = _contexts.get(pid)
    if ctx is None:
        if _app is None:
            raise RuntimeError("worker app not created: call worker.app.create_worker_app()")
        settings = get_worker_settings()
        ctx = WorkerContext(settings=settings, stores=open_stores(settings), celery=_app)
        _contexts.clear()  # a forked child drops its parent's entry
        _contexts[pid] = ctx
    return ctx
