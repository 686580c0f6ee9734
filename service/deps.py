"""Dependencies, declared once as `Annotated` aliases for the routers."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from service.auth import (
    LOCAL_TENANT,
    SESSION_COOKIE,
    client_is_local,
    open_access,
    tenant_for_key,
)
from service.errors import Unauthorized
from service.settings import ServiceSettings
from service.storage import Stores


def get_settings_dep(request: Request) -> ServiceSettings:
    settings: ServiceSettings = request.app.state.settings
    return settings


def get_stores(request: Request) -> Stores:
    stores: Stores = request.app.state.stores
    return stores


def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


SettingsDep = Annotated[ServiceSettings, Depends(get_settings_dep)]
StoresDep = Annotated[Stores, Depends(get_stores)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


def bearer_key(request: Request) -> str | None:
    """The API key from `Authorization: Bearer …`, or from the dashboard's session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    return request.cookies.get(SESSION_COOKIE) or None


def current_tenant(request: Request, settings: SettingsDep, stores: StoresDep) -> str:
    key = bearer_key(request)
    if key is not None:
        tenant = tenant_for_key(stores.jobs, key)
        if tenant is None:
            raise Unauthorized(
                "unknown API key", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return tenant
    client = request.client.host if request.client else None
    if open_access(settings, stores.jobs) and client_is_local(client):
        return LOCAL_TENANT
    raise Unauthorized(
        "an API key is required: send 'Authorization: Bearer <key>' "
        "(make one with: c3 keys create --tenant NAME)",
        headers={"WWW-Authenticate": "Bearer"},
    )


TenantDep = Annotated[str, Depends(current_tenant)]
