"""Background work attached to a record, made safe against dying workers.

A worker may only work on a record after *claiming* it (task queued → running, under the
store's transaction), and renews its lease while it works. A lease not renewed for
`stale_after` seconds is stale: the reaper puts the record back to queued and publishes it
again, and the next claim resumes it. So a job is never lost (a dead worker's lease goes
stale), never run twice at once (only one claim can win, and a worker that lost its lease
stops), and a duplicate message is harmless.

Time comes from a `Clock` (default `time.time`), so tests move it instead of sleeping.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic

from celery import Celery

from service import logs
from service.queue import publish, purge
from service.records import (
    ClassifierRecord,
    DatasetRecord,
    ErrorInfo,
    JobRecord,
    Lease,
    Record,
    TaskState,
)
from service.storage import JobStore, Mutator, StoreUnavailable
from service.storage.base import R

log = logging.getLogger(__name__)

Clock = Callable[[], float]
WORK: tuple[type[Record], ...] = (JobRecord, ClassifierRecord, DatasetRecord)
"""Every kind of record a worker works on."""


@dataclass(frozen=True)
class Claim(Generic[R]):
    """Proof that this worker holds a record; every write it makes is conditional on it."""

    model: type[R]
    id: str
    token: str
    clock: Clock = time.time

    def holds(self, record: Record) -> bool:
        lease = record.task.lease
        return (
            record.task.state == TaskState.RUNNING
            and lease is not None
            and (lease.token == self.token)
        )

    def update(self, store: JobStore, mutate: Mutator[R]) -> R | None:
        """Apply `mutate` and renew the heartbeat, only while the lease is held."""

        def guarded(record: R) -> R | None:
            if not self.holds(record):
                return None
            record.task.lease = Lease(token=self.token, heartbeat_at=self.clock())
            return mutate(record)

        return store.update(self.model, self.id, guarded)

    def renew(self, store: JobStore) -> R | None:
        """Heartbeat; None when the lease was lost (reaped) or the record is gone."""
        return self.update(store, lambda record: record)

    def finish(self, store: JobStore, mutate: Mutator[R]) -> R | None:
        """Final write: apply `mutate`, mark the task done, release the lease."""

        def done(record: R) -> R | None:
            new = mutate(record)
            if new is not None:
                new.task = new.task.model_copy(update={"state": TaskState.DONE, "lease": None})
            return new

        return self.update(store, done)


def claim(
    store: JobStore, model: type[R], id: str, *, max_attempts: int, clock: Clock = time.time
) -> tuple[Claim[R], R] | None:
    """Take a queued record for this worker; None if it is not queued (a duplicate message, a
    cancelled job, one already done or held by a live worker). A record whose workers died
    `max_attempts` times is failed instead of being tried again."""
    token = secrets.token_hex(8)

    def take(record: R) -> R | None:
        task = record.task
        if task.state != TaskState.QUEUED:
            return None
        if task.attempts >= max_attempts:
            record.task = task.model_copy(update={"state": TaskState.DONE, "lease": None})
            record.state = model.FAILED
            if isinstance(record, JobRecord):
                record.finished_at = clock()
            record.error = ErrorInfo(
                title="Worker lost",
                detail=f"the worker died {task.attempts} times while working on it "
                "(out of memory or killed); giving up",
            )
            return record
        record.task = task.model_copy(
            update={
                "state": TaskState.RUNNING,
                "attempts": task.attempts + 1,
                "lease": Lease(token=token, heartbeat_at=clock()),
            }
        )
        record.state = model.RUNNING
        return record

    record = store.update(model, id, take)
    if record is None or record.task.lease is None or record.task.lease.token != token:
        return None
    id_field = "job_id" if isinstance(record, JobRecord) else "upload_id"
    logs.annotate(tenant=record.tenant, request_id=record.task.request_id, **{id_field: id})
    return Claim(model, id, token, clock), record


class Heartbeat(Generic[R]):
    """Renews a lease from a background thread while a task works, so that slow steps (model
    loading, metrics) never look like a dead worker. `lost` is set when the lease is gone;
    `on_renew` sees the fresh record (e.g. to notice a cancel request)."""

    def __init__(
        self,
        store: JobStore,
        lease: Claim[R],
        interval: float,
        on_renew: Callable[[R], None] | None = None,
    ) -> None:
        self._store, self._lease, self._interval = store, lease, interval
        self._on_renew = on_renew
        self.lost = threading.Event()
        self._stop = threading.Event()
        context = contextvars.copy_context()  # its log lines carry the task's ids
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=f"heartbeat-{lease.id}", daemon=True
        )

    def __enter__(self) -> Heartbeat[R]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                record = self._lease.renew(self._store)
            except StoreUnavailable as exc:  # transient: keep working, retry next beat
                log.warning(
                    "heartbeat of %s %s failed: %s", self._lease.model.KIND, self._lease.id, exc
                )
                continue
            if record is None:
                log.warning("lease on %s %s lost; stopping", self._lease.model.KIND, self._lease.id)
                self.lost.set()
                return
            if self._on_renew is not None:
                self._on_renew(record)


def _requeue(record: R, now: float) -> R:
    record.task = record.task.requeued(now)
    record.state = type(record).WAITING
    return record


def publish_task(
    store: JobStore, app: Celery, model: type[Record], id: str, clock: Clock = time.time
) -> None:
    """Send the "work on record `id`" message and note it in the record. A crash between
    writing a record and sending its message leaves the record unpublished, which
    `republish` finds; a message sent twice is harmless (only one claim can win)."""
    publish(app, model.TASK_NAME, id)

    def published(record: Record) -> Record | None:
        if record.task.state != TaskState.QUEUED:
            return None
        record.task = record.task.model_copy(update={"published_at": clock()})
        return record

    try:
        store.update(model, id, published)
    except StoreUnavailable as exc:  # the message is out: the worst case is a duplicate
        log.warning("%s %s published, but not marked: %s", model.KIND, id, exc)


def _unpublished(record: Record, now: float, grace: float) -> bool:
    task = record.task
    return (
        task.state == TaskState.QUEUED
        and task.published_at is None
        and (now - task.queued_at > grace)
    )


def republish(store: JobStore, app: Celery, *, grace: float, clock: Clock = time.time) -> list[str]:
    """Send the messages of queued records that never got theirs (their writer died between
    the record and the message, e.g. an API killed mid-request)."""
    sent = []
    for model in WORK:
        orphaned = functools.partial(_unpublished, now=clock(), grace=grace)
        for record in store.list(model, state=model.WAITING, match=orphaned).items:
            log.warning("%s %s: queued without a message, publishing it", model.KIND, record.id)
            publish_task(store, app, model, record.id, clock)
            sent.append(record.id)
    return sent


def _stale(record: Record, now: float, stale_after: float) -> bool:
    lease = record.task.lease
    beat = lease.heartbeat_at if lease is not None else 0.0
    return record.task.state == TaskState.RUNNING and now - beat > stale_after


def reap(
    store: JobStore, app: Celery, *, stale_after: float, clock: Clock = time.time
) -> list[str]:
    """Put records whose worker stopped renewing its lease back in the queue."""
    requeued = []
    for model in WORK:
        stale = functools.partial(_stale, now=clock(), stale_after=stale_after)
        running = store.list(model, state=model.RUNNING, match=stale).items
        for record in running:
            token = record.task.lease.token if record.task.lease else None

            def back_to_queue(r: Record, token: str | None = token) -> Record | None:
                lease = r.task.lease
                if not _stale(r, clock(), stale_after) or lease is None or lease.token != token:
                    return None
                return _requeue(r, clock())

            if store.update(model, record.id, back_to_queue) is not None:
                log.warning("%s %s: worker lost, re-queued", model.KIND, record.id)
                publish_task(store, app, model, record.id, clock)
                requeued.append(record.id)
    return requeued


def recover(store: JobStore, app: Celery) -> list[str]:
    """Embedded start-up: no worker of ours is alive yet, so every unfinished record goes back
    to the queue, which is rebuilt from the job store in creation order."""
    purge(app)
    requeued = []
    for model in WORK:
        pending: list[Record] = []
        for state in {model.WAITING, model.RUNNING}:
            pending += store.list(
                model,
                state=state,
                match=lambda r: r.task.state in (TaskState.QUEUED, TaskState.RUNNING),
            ).items
        for record in sorted(pending, key=lambda r: r.created_at):
            if store.update(model, record.id, lambda r: _requeue(r, time.time())) is not None:
                publish_task(store, app, model, record.id)
                requeued.append(record.id)
    return requeued
