"""The real app through its ASGI interface (lifespan included), on a fresh embedded data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.records import ClassifierRecord
from service.settings import ServiceSettings
from service.storage import JobStore, Stores, open_stores
from service.storage.redis_jobs import RedisJobStore
from service.storage.sqlite_jobs import SqliteJobStore
from tests.records import seed_classifier


@pytest.fixture
def api(c3_env: dict[str, str]) -> Iterator[TestClient]:
    """Embedded default, loopback client: the keyless local tenant."""
    with TestClient(create_app(ServiceSettings()), client=("127.0.0.1", 50000)) as client:
        yield client


@pytest.fixture
def stores(api: TestClient) -> Iterator[Stores]:
    """The app's data folder, opened a second time to seed records as a worker would."""
    opened = open_stores(ServiceSettings())
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def classifier(stores: Stores) -> ClassifierRecord:
    """A classifier record in the app's stores (no upload: `tests.records`)."""
    return seed_classifier(stores)


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
