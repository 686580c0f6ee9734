"""The real app through its ASGI interface (lifespan included), on a fresh embedded data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.settings import ServiceSettings
from service.storage import JobStore, open_stores
from service.storage.redis_jobs import RedisJobStore
from service.storage.sqlite_jobs import SqliteJobStore


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


@pytest.fixture(params=["sqlite", "redis"])
def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """Each job store in turn: the embedded default's SQLite and Redis (the tests' database)."""
    store: JobStore
    if request.param == "sqlite":
        store = SqliteJobStore(tmp_path / "c3.sqlite")
    else:
        store = RedisJobStore(request.getfixturevalue("redis_url"), prefix="test:")
    yield store
    store.close()
