"""Optional OpenTelemetry tracing (`C3_TRACING=otlp`; the packages are the `tracing` extra).

A request's span and the spans of the Celery tasks it queues share one trace: the Celery
instrumentation puts the trace context in each message's headers when the API publishes, and
the worker continues the trace when it runs the task. Spans go to the OTLP collector that the
standard `OTEL_EXPORTER_OTLP_*` variables name, unless a tracer provider is already installed
(by `opentelemetry-instrument`, or by a test with an in-memory exporter): then that one is used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)


def start(service_name: str) -> None:
    """Install the OTLP exporter (unless a provider is installed) and instrument Celery: the
    producer side in the API, the task side in each worker process."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        log.info("tracing: spans of %s go to the OTLP collector", service_name)
    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def instrument_api(app: FastAPI) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    start("c3-api")
    FastAPIInstrumentor.instrument_app(app)
