"""A bounded property-based run over the whole API (schemathesis, from the app's own OpenAPI
document): whatever a client sends to any operation, the answer is never a server error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from service.app import create_app
from service.settings import ServiceSettings
from tests import records

EXAMPLES = 15
"""Cases per operation: the run stays bounded (about 30 s for the whole API)."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    application = create_app(ServiceSettings(data_dir=data))
    with TestClient(application, client=("127.0.0.1", 50000)):  # runs the lifespan
        stores = application.state.stores
        records.seed_job(stores, records.seed_classifier(stores), per_class=2)  # data to read
        yield application


def operations() -> list[str]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ServiceSettings()))
    return [f"{r.ok().method.upper()} {r.ok().path}" for r in schema.get_all_operations()]


@pytest.mark.parametrize("label", operations())
def test_no_request_is_a_server_error(app: FastAPI, label: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    method, path = label.split(" ", 1)
    operation = next(
        r.ok() for r in schema.get_all_operations()
        if r.ok().method.upper() == method and r.ok().path == path
    )  # fmt: skip
    failures: list[str] = []
    calls: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case: Any) -> None:
        calls.append(1)
        response = case.call(headers={"Origin": "http://testserver"})
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

    call()
    assert not failures, failures
    assert len(calls) >= 1  # the operation was exercised
