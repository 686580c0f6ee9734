"""Dependencies, declared once as `Annotated` aliases for the routers."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service import logs
from service.auth import authenticate
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


API_KEY = HTTPBearer(
    scheme_name="apiKey",
    description="An API key (`c3 keys create --tenant NAME`), as `Authorization: Bearer <key>`. "
    "A service on a loopback address with no key configured needs none.",
    auto_error=False,
)
"""Declares the security scheme in the OpenAPI document; `authenticate` reads the key itself
(it also accepts the dashboard's session cookie)."""


def current_tenant(
    request: Request,
    settings: SettingsDep,
    stores: StoresDep,
    _key: Annotated[HTTPAuthorizationCredentials | None, Security(API_KEY)],
) -> str:
    tenant = authenticate(request, settings, stores.jobs)
    logs.annotate(tenant=tenant)
    return tenant


TenantDep = Annotated[str, Depends(current_tenant)]
