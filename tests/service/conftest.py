"""The real app through its ASGI interface (lifespan included), on a fresh embedded data dir."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.settings import ServiceSettings
from service.storage import open_stores


@pytest.fixture
def api(c3_env: dict[str, str]) -> Iterator[TestClient]:
    """Embedded default, loopback client: the keyless local tenant."""
    with TestClient(create_app(ServiceSettings()), client=("127.0.0.1", 50000)) as client:
        yield client


def make_key(tenant: str) -> str:
    stores = open_stores(ServiceSettings())
    try:
        return create_key(stores.jobs, tenant)
    finally:
        stores.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
