"""Prometheus metrics, read from the job store at scrape time, so every API replica reports the
same figures and nothing is lost when one restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.deps import StoresDep, TenantDep
from service.records import JobRecord, JobState
from service.storage import JobStore

router = APIRouter(tags=["metrics"])

PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)


class JobCollector(Collector):
    def __init__(self, store: JobStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        jobs = self._store.list(JobRecord).items
        by_state = GaugeMetricFamily("c3_jobs", "Inversion jobs by state", labels=["state"])
        for state in JobState:
            by_state.add_metric([state.value], sum(1 for j in jobs if j.state == state))
        yield by_state
        yield GaugeMetricFamily(
            "c3_queue_depth", "Jobs waiting for a worker",
            value=sum(1 for j in jobs if j.state == JobState.QUEUED),
        )  # fmt: skip
        now = time.time()
        yield GaugeMetricFamily(
            "c3_step_rate", "Training steps per second over all running jobs",
            value=sum(
                j.progress.steps_per_second or 0.0
                for j in jobs
                if j.state == JobState.RUNNING
                and j.progress is not None
                and now - j.progress.updated_at < 60
            ),
        )  # fmt: skip
        durations = sorted(
            j.finished_at - j.started_at
            for j in jobs
            if j.state in (JobState.SUCCEEDED, JobState.FAILED) and j.started_at and j.finished_at
        )
        buckets = [(str(b), sum(1 for d in durations if d <= b)) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", len(durations)))
        yield HistogramMetricFamily(
            "c3_job_duration_seconds", "Wall time from a job's start to its end",
            buckets=buckets, sum_value=sum(durations),
        )  # fmt: skip


@router.get("/metrics", response_class=Response, responses=PROMETHEUS_TEXT)
def metrics(_: TenantDep, stores: StoresDep) -> Response:
    """Prometheus exposition of job figures over all tenants (any valid key may scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector(stores.jobs))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
