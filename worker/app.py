"""The worker's Celery app: the shared configuration (service.queue) plus the tasks, and the
housekeeping thread in the worker's main process (service.housekeeping: re-queues jobs whose
worker died, publishes what a crash left unpublished, collects orphaned blobs)."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from celery import Celery, signals

import service.logs as logs
from service.housekeeping import Housekeeper
from service.queue import GPU_QUEUE, make_celery
from worker import tasks
from worker.context import bind_app, get_context
from worker.settings import get_worker_settings

log = logging.getLogger(__name__)

_housekeeper: Housekeeper | None = None


def create_worker_app(*, preload_engine: bool = False) -> Celery:
    """`preload_engine`: import torch and the job code in each pool child as it starts, so the
    first job does not pay for it (never in the main process, which must not touch CUDA)."""
    app = make_celery(get_worker_settings())
    tasks.register(app)
    bind_app(app)
    signals.worker_ready.connect(_start_housekeeping, weak=False)
    signals.worker_shutdown.connect(_stop_housekeeping, weak=False)
    signals.task_prerun.connect(_bind_task_logs, weak=False)
    signals.task_postrun.connect(_unbind_task_logs, weak=False)
    if preload_engine:
        signals.worker_process_init.connect(_prepare_job_process, weak=False)
    if get_worker_settings().tracing != "off":
        signals.worker_process_init.connect(_start_tracing, weak=False)
    return app


def _start_tracing(**_: Any) -> None:
    """In each pool child (an exporter's thread must not cross a fork)."""
    from service.tracing import start

    start("c3-worker")


_task_logs: dict[str, contextlib.AbstractContextManager[object]] = {}


def _bind_task_logs(task_id: str, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    """A task's lines carry the id of the request behind its message; the record it claims
    adds its tenant and id (service.background.claim)."""
    bound = logs.bound(request_id=(kwargs or {}).get("request_id"))
    bound.__enter__()
    _task_logs[task_id] = bound


def _unbind_task_logs(task_id: str, **_: Any) -> None:
    bound = _task_logs.pop(task_id, None)
    if bound is not None:
        bound.__exit__(None, None, None)


def _prepare_job_process(**_: Any) -> None:
    """In each pool child as it starts: import torch and the job code, so the first job does
    not pay for it."""
    from worker.jobs import size_threads  # torch, the engine, the job runner

    log.info("job process: %d CPU thread(s)", size_threads(get_worker_settings()))


def _start_housekeeping(**_: Any) -> None:
    global _housekeeper
    ctx = get_context()
    s = ctx.settings
    _housekeeper = Housekeeper(
        ctx.stores,
        ctx.celery,
        interval=s.reaper_seconds,
        stale_after=s.stale_after_seconds,
        republish_grace=s.republish_after_seconds,
        gc_interval=s.gc_seconds,
        gc_grace=s.gc_grace_seconds,
        min_free=s.min_free_mb * 2**20,
    )
    _housekeeper.start()
    log.info("housekeeping started (every %.1fs)", s.reaper_seconds)


def _stop_housekeeping(**_: Any) -> None:
    if _housekeeper is not None:
        _housekeeper.stop()


def run_worker(queues: str, concurrency: int, name: str | None, loglevel: str = "INFO") -> None:
    """Run a Celery worker with the prefork pool: the main process never touches CUDA or torch;
    each job runs in a child, so a crash or OOM in a job loses only the child."""
    # the job processes of this worker share the host's cores (c3 serve says how many in all)
    os.environ.setdefault("C3_JOB_PROCESSES", str(concurrency))
    get_worker_settings.cache_clear()
    app = create_worker_app(preload_engine=GPU_QUEUE in queues.split(","))
    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    settings = get_worker_settings()
    if not (settings.celery_events and settings.redis_url):
        # Event heartbeats are how Flower tells a live worker: only sent when it can watch.
        argv.append("--without-heartbeat")
    if name:
        argv.append(f"--hostname={name}")
    app.worker_main(argv)
