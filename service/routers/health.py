"""Liveness and readiness: the only endpoints without access control."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.deps import CeleryDep, SettingsDep, StoresDep
from service.schemas import HealthPublic, ReadinessPublic
from service.settings import ServiceSettings
from service.storage import Stores

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic)
def healthz() -> HealthPublic:
    """The process is up."""
    return HealthPublic(status="ok")


def _check(probe: Any) -> str:
    try:
        probe()
    except Exception as exc:
        return f"unavailable: {exc}"
    return "ok"


def _broker_ping(celery: Any) -> None:
    with celery.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=3)


def _disk(stores: Stores, settings: ServiceSettings) -> None:
    free = stores.artifacts.free_bytes()
    if free is not None and free < settings.min_free_mb * 2**20:
        raise OSError(
            f"disk full: {free / 2**20:,.0f} MB free, at least {settings.min_free_mb:,} MB needed"
        )


@router.get("/readyz", response_model=ReadinessPublic, responses={503: {"model": ReadinessPublic}})
async def readyz(stores: StoresDep, celery: CeleryDep, settings: SettingsDep) -> Any:
    """The job store, the broker and the blob store all answer, and the disk has room."""
    checks = {
        "job_store": await run_in_threadpool(_check, stores.jobs.ping),
        "broker": await run_in_threadpool(_check, lambda: _broker_ping(celery)),
        "blob_store": await run_in_threadpool(_check, stores.artifacts.ping),
        "disk": await run_in_threadpool(_check, lambda: _disk(stores, settings)),
    }
    ready = all(v == "ok" for v in checks.values())
    body = ReadinessPublic(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
