"""Background work attached to a record, made safe against dying workers.

Every record that needs a worker (a job, an upload being validated) carries a `task` section:
`state` (queued | running | done), `attempts`, `lease` and `heartbeat_at`. A worker may only
work on a record after *claiming* it (queued -> running, under the store's transaction), and
renews its lease while it works. A lease not renewed for `stale_after` seconds is stale: the
reaper puts the record back to queued and publishes it again, and the next claim resumes it.
So a job is never lost (a dead worker's lease goes stale), never run twice at once (only one
claim can win, and a worker that lost its lease stops), and a duplicate message is harmless.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from service.queue import (
    RUN_INVERSION,
    VALIDATE_CLASSIFIER,
    VALIDATE_DATASET,
    publish,
    purge,
)
from service.storage import JobStore, StoreUnavailable
from service.storage.base import Doc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    """How one kind of record maps onto the task lifecycle."""

    kind: str
    task_name: str
    waiting_state: str  # the record's state while queued
    running_state: str  # while a worker holds the lease
    failed_state: str  # when it cannot be done (e.g. the worker died on it too often)


WORK = {
    w.kind: w
    for w in (
        Work("job", RUN_INVERSION, "queued", "running", "failed"),
        Work("classifier", VALIDATE_CLASSIFIER, "validating", "validating", "rejected"),
        Work("dataset", VALIDATE_DATASET, "validating", "validating", "rejected"),
    )
}


def new_task() -> dict[str, Any]:
    return {"state": "queued", "attempts": 0, "lease": None, "heartbeat_at": None}


@dataclass(frozen=True)
class Lease:
    """Proof that this worker holds a record; every write it makes is conditional on it."""

    kind: str
    id: str
    token: str

    def holds(self, doc: Doc) -> bool:
        task = doc.get("task") or {}
        return task.get("state") == "running" and task.get("lease") == self.token

    def update(self, store: JobStore, mutate: Callable[[Doc], Doc | None]) -> Doc | None:
        """Apply `mutate` and renew the heartbeat, only while the lease is held."""

        def guarded(doc: Doc) -> Doc | None:
            if not self.holds(doc):
                return None
            doc["task"]["heartbeat_at"] = time.time()
            return mutate(doc)

        return store.update(self.kind, self.id, guarded)

    def renew(self, store: JobStore) -> Doc | None:
        """Heartbeat; None when the lease was lost (reaped) or the record is gone."""
        return self.update(store, lambda doc: doc)

    def finish(self, store: JobStore, mutate: Callable[[Doc], Doc | None]) -> Doc | None:
        """Final write: apply `mutate`, mark the task done, release the lease."""

        def done(doc: Doc) -> Doc | None:
            new = mutate(doc)
            if new is not None:
                new["task"].update(state="done", lease=None)
            return new

        return self.update(store, done)


def claim(store: JobStore, kind: str, id: str, *, max_attempts: int) -> tuple[Lease, Doc] | None:
    """Take a queued record for this worker; None if it is not queued (a duplicate message, a
    cancelled job, one already done or held by a live worker). A record whose workers died
    `max_attempts` times is failed instead of being tried again."""
    work = WORK[kind]
    token = secrets.token_hex(8)

    def take(doc: Doc) -> Doc | None:
        task = doc.get("task") or {}
        if task.get("state") != "queued":
            return None
        if task["attempts"] >= max_attempts:
            task.update(state="done", lease=None)
            doc.update(
                state=work.failed_state,
                finished_at=time.time(),
                error={
                    "title": "Worker lost",
                    "detail": f"the worker died {task['attempts']} times while working on it "
                    "(out of memory or killed); giving up",
                },
            )
            return doc
        task.update(
            state="running", attempts=task["attempts"] + 1, lease=token, heartbeat_at=time.time()
        )
        doc["state"] = work.running_state
        return doc

    doc = store.update(kind, id, take)
    if doc is None or doc["task"].get("lease") != token:
        return None
    return Lease(kind, id, token), doc


class Heartbeat:
    """Renews a lease from a background thread while a task works, so that slow steps (model
    loading, metrics) never look like a dead worker. `lost` is set when the lease is gone;
    `on_renew` sees the fresh record (e.g. to notice a cancel request)."""

    def __init__(
        self,
        store: JobStore,
        lease: Lease,
        interval: float,
        on_renew: Callable[[Doc], None] | None = None,
    ) -> None:
        self._store, self._lease, self._interval = store, lease, interval
        self._on_renew = on_renew
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{lease.id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                doc = self._lease.renew(self._store)
            except StoreUnavailable as exc:  # transient: keep working, retry next beat
                log.warning("heartbeat of %s %s failed: %s", self._lease.kind, self._lease.id, exc)
                continue
            if doc is None:
                log.warning("lease on %s %s lost; stopping", self._lease.kind, self._lease.id)
                self.lost.set()
                return
            if self._on_renew is not None:
                self._on_renew(doc)


def _requeue(work: Work, doc: Doc) -> Doc:
    doc["task"].update(state="queued", lease=None)
    doc["state"] = work.waiting_state
    return doc


def reap(store: JobStore, app: Celery, *, stale_after: float) -> list[str]:
    """Put records whose worker stopped renewing its lease back in the queue."""
    requeued = []
    for work in WORK.values():

        def stale(doc: Doc) -> bool:
            task = doc.get("task") or {}
            beat = task.get("heartbeat_at") or 0.0
            return bool(task.get("state") == "running" and time.time() - beat > stale_after)

        for doc in store.list(work.kind, state=work.running_state, match=stale).items:
            lease = doc["task"]["lease"]

            def back_to_queue(d: Doc, lease: str = lease, work: Work = work) -> Doc | None:
                return _requeue(work, d) if stale(d) and d["task"]["lease"] == lease else None

            if store.update(work.kind, doc["id"], back_to_queue) is not None:
                log.warning("%s %s: worker lost, re-queued", work.kind, doc["id"])
                publish(app, work.task_name, doc["id"])
                requeued.append(doc["id"])
    return requeued


def recover(store: JobStore, app: Celery) -> list[str]:
    """Embedded start-up: no worker of ours is alive yet, so every unfinished record goes back
    to the queue, which is rebuilt from the job store in creation order."""
    purge(app)
    requeued = []
    for work in WORK.values():
        pending: list[Doc] = []
        for state in {work.waiting_state, work.running_state}:
            pending += store.list(
                work.kind,
                state=state,
                match=lambda d: (d.get("task") or {}).get("state") in ("queued", "running"),
            ).items
        for doc in sorted(pending, key=lambda d: d["created_at"]):
            if store.update(work.kind, doc["id"], functools.partial(_requeue, work)) is not None:
                publish(app, work.task_name, doc["id"])
                requeued.append(doc["id"])
    return requeued


class Reaper:
    """Runs `reap` every `interval` seconds in a daemon thread (inside each worker)."""

    def __init__(self, store: JobStore, app: Celery, *, interval: float, stale_after: float):
        self._store, self._app = store, app
        self._interval, self._stale_after = interval, stale_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                reap(self._store, self._app, stale_after=self._stale_after)
            except Exception:
                log.exception("reaper pass failed; retrying")
            if self._stop.wait(self._interval):
                return
