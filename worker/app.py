"""The worker's Celery app: the shared configuration (service.queue) plus the tasks, and a
reaper thread in the worker's main process that re-queues jobs whose worker died."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from service.background import Reaper
from service.queue import GPU_QUEUE, make_celery
from worker import tasks
from worker.context import bind_app, get_context
from worker.settings import get_worker_settings

log = logging.getLogger(__name__)

_reaper: Reaper | None = None


def create_worker_app(*, preload_engine: bool = False) -> Celery:
    """`preload_engine`: import torch and the job code in each pool child as it starts, so the
    first job does not pay for it (never in the main process, which must not touch CUDA)."""
    app = make_celery(get_worker_settings())
    tasks.register(app)
    bind_app(app)
    signals.worker_ready.connect(_start_reaper, weak=False)
    signals.worker_shutdown.connect(_stop_reaper, weak=False)
    if preload_engine:
        signals.worker_process_init.connect(_import_engine, weak=False)
    return app


def _import_engine(**_: Any) -> None:
    import worker.jobs  # noqa: F401  (torch, the engine, the job runner)


def _start_reaper(**_: Any) -> None:
    global _reaper
    ctx = get_context()
    _reaper = Reaper(
        ctx.stores.jobs,
        ctx.celery,
        interval=ctx.settings.reaper_seconds,
        stale_after=ctx.settings.stale_after_seconds,
    )
    _reaper.start()
    log.info("reaper started (every %.1fs)", ctx.settings.reaper_seconds)


def _stop_reaper(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stop()


def run_worker(queues: str, concurrency: int, name: str | None, loglevel: str = "INFO") -> None:
    """Run a Celery worker with the prefork pool: the main process never touches CUDA or torch;
    each job runs in a child, so a crash or OOM in a job loses only the child."""
    app = create_worker_app(preload_engine=GPU_QUEUE in queues.split(","))
    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if name:
        argv.append(f"--hostname={name}")
    app.worker_main(argv)
