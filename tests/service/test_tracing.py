"""OpenTelemetry (C3_TRACING): an API request and the Celery task it queues are one trace. The
worker is a real Celery worker on Redis, run in a thread of this process so that one in-memory
exporter sees the spans of both sides; the trace context travels in the message's headers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.auth import create_key
from service.settings import ServiceSettings
from service.storage import open_stores
from tests import factories

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    """The process's tracer provider can be set once: this module's, with the in-memory
    exporter (service.tracing keeps a provider it finds installed)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tracer_provider)


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"C3_REDIS_URL": redis_url, "C3_REDIS_PREFIX": "trace:",
                        "C3_DATA_DIR": str(tmp_path), "C3_TRACING": "otlp"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    from service.settings import get_settings
    from worker.settings import get_worker_settings

    get_settings.cache_clear()
    get_worker_settings.cache_clear()
    yield
    get_settings.cache_clear()
    get_worker_settings.cache_clear()


def test_a_request_and_the_task_it_queues_are_one_trace(env: None) -> None:
    from worker.app import create_worker_app

    settings = ServiceSettings()
    stores = open_stores(settings)
    headers = {"Authorization": f"Bearer {create_key(stores.jobs, 'traced')}"}
    stores.close()
    worker_app = create_worker_app()
    EXPORTER.clear()
    with (
        start_worker(worker_app, pool="solo", perform_ping_check=False, shutdown_timeout=30),
        TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client,
    ):
        response = client.post(
            "/datasets", headers=headers, data={"name": "held-out"},
            files={"file": ("ref.npz", factories.digits_reference_npz((1, 8, 8), per_class=2))},
        )  # fmt: skip
        assert response.status_code in (201, 202), response.text
        deadline = time.monotonic() + 60
        while not any(s.name.startswith("run/") for s in EXPORTER.get_finished_spans()):
            assert time.monotonic() < deadline, [s.name for s in EXPORTER.get_finished_spans()]
            time.sleep(0.2)
    spans = EXPORTER.get_finished_spans()
    request = next(s for s in spans if s.name == "POST /datasets")
    published = next(s for s in spans if s.name == "apply_async/c3.validate_dataset")
    ran = next(s for s in spans if s.name == "run/c3.validate_dataset")
    assert request.context is not None
    trace_id = request.context.trace_id
    assert published.context is not None
    assert ran.context is not None
    assert published.context.trace_id == trace_id
    assert ran.context.trace_id == trace_id  # continued by the worker, from the message
    assert ran.parent is not None
    assert ran.parent.span_id == published.context.span_id
