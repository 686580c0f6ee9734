"""A bounded property-based run over the whole API (schemathesis, from the service's own OpenAPI
document) against a live `c3 serve` over real HTTP: whatever a client sends to any operation,
the answer is never a server error, and it conforms to the document (status code, media type,
headers and body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.settings import ServiceSettings
from service.storage import open_stores
from tests import records
from tests.conftest import LiveApi, clean_env

EXAMPLES = 15
"""Cases per operation: the run stays bounded (about a minute for the whole API)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveApi, dict[str, str]]]:
    """`c3 serve` over a data folder that holds a classifier and a finished job to read."""
    data = tmp_path_factory.mktemp("fuzz") / "data"
    stores = open_stores(ServiceSettings(data_dir=data))
    try:
        classifier = records.seed_classifier(stores)
        job = records.seed_job(stores, classifier, per_class=2)
        ids = {"classifiers": classifier.id, "datasets": job.dataset_id or "", "inversions": job.id}
    finally:
        stores.close()
    api = LiveApi(clean_env(C3_DATA_DIR=str(data), C3_TORCH_THREADS="1"), "serve").start()
    yield api, ids
    api.stop()


def operations() -> list[str]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ServiceSettings()))
    return [f"{r.ok().method.upper()} {r.ok().path}" for r in schema.get_all_operations()]


@pytest.mark.parametrize("label", operations())
def test_no_request_is_a_server_error_or_off_the_document(
    live: tuple[LiveApi, dict[str, str]], label: str
) -> None:
    api, ids = live
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    method, path = label.split(" ", 1)

    @schema.hook
    def flatmap_path_parameters(context: Any, parameters: dict[str, Any]) -> Any:
        """Half the cases name a record that exists (never to delete it: later operations
        read it), so the operations are exercised beyond their 404."""
        collection = path.split("/")[1]
        if not parameters or "id" not in parameters or method == "DELETE" or collection not in ids:
            return st.just(parameters)
        return st.sampled_from([parameters, {**parameters, "id": ids[collection]}])

    operation = next(
        r.ok() for r in schema.get_all_operations()
        if r.ok().method.upper() == method and r.ok().path == path
    )  # fmt: skip
    failures: list[str] = []
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case: Any) -> None:
        response = case.call(base_url=api.url, timeout=30)
        statuses.append(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except AssertionError as exc:  # schemathesis' failures are AssertionErrors
            failures.append(f"{case.method} {case.formatted_path} → {response.status_code}: {exc}")

    call()
    assert not failures, "\n\n".join(failures[:3])
    assert statuses  # the operation was exercised


def test_the_document_served_is_the_apps(live: tuple[LiveApi, dict[str, str]]) -> None:
    api, _ = live
    import httpx

    served = httpx.get(f"{api.url}/openapi.json").json()
    assert served == create_app(ServiceSettings(data_dir=Path("unused"))).openapi()
