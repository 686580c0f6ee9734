"""The FastAPI app. Importing it builds nothing and imports no torch: stores and the Celery
producer are built in the lifespan, from settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service import dashboard
from service.auth import refuse_unsafe_bind
from service.errors import install_error_handlers
from service.gate import RequestGate
from service.openapi import install as install_openapi
from service.openapi import operation_id
from service.queue import make_celery
from service.read_cache import cache
from service.request_ids import RequestIds
from service.routers import classifiers, datasets, health, inversions, metrics, report
from service.settings import ServiceSettings, get_settings
from service.storage import open_stores

log = logging.getLogger(__name__)


class UnsafeBind(RuntimeError):
    """The API was asked to listen beyond loopback without any API key."""


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stores = open_stores(settings)
        refusal = refuse_unsafe_bind(settings, stores.jobs)
        if refusal:
            stores.close()
            raise UnsafeBind(refusal)
        cache.budget = settings.read_cache_mb * 2**20
        app.state.settings = settings
        app.state.stores = stores
        app.state.celery = make_celery(settings)
        try:
            yield
        finally:
            stores.close()

    app = FastAPIOffline(  # /docs and /redoc with their scripts served from here, not a CDN
        static_url="/docs-static",
        title="C3",
        summary="Audit image classifiers with Confidently Classified Counterfeits.",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    app.add_middleware(RequestGate)
    app.add_middleware(RequestIds)  # outermost: every request has an id, even one refused
    app.include_router(health.router)
    app.include_router(classifiers.router)
    app.include_router(datasets.router)
    app.include_router(inversions.router)
    app.include_router(metrics.router)
    app.include_router(report.router)
    dashboard.mount(app)
    install_openapi(app)
    if settings.tracing != "off":
        from service.tracing import instrument_api

        instrument_api(app)
    return app
