"""Housekeeping, run by every worker in a background thread: nothing stays stuck or orphaned
after a crash, whichever process died.

- `reap`: running records whose worker stopped renewing its lease go back to the queue;
- `republish`: queued records whose message was never sent (their writer died between the
  record and the message) get it;
- `resume_after_disk_full`: jobs that failed for want of space resume once there is room;
- `collect_garbage`: blobs no record owns (their writer died between the blob and the
  record, or a delete was interrupted) and partial writes are removed after a grace period,
  as are blobs a finished record no longer needs (an upload once validated, the checkpoint of
  a succeeded job).
Every step is idempotent, so several workers may run them at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from celery import Celery

from service.background import Clock, publish_task, reap, republish
from service.records import (
    ClassifierRecord,
    DatasetRecord,
    JobRecord,
    JobState,
    Record,
    UploadState,
)
from service.storage import Stores, keys

log = logging.getLogger(__name__)

COLLECTIONS: dict[str, type[Record]] = {
    "classifiers": ClassifierRecord,
    "datasets": DatasetRecord,
    "jobs": JobRecord,
}


def _unneeded(record: Record, key: str) -> bool:
    """A blob its (existing) record no longer needs."""
    if isinstance(record, ClassifierRecord | DatasetRecord):
        upload = (
            keys.classifier_upload if isinstance(record, ClassifierRecord) else keys.dataset_upload
        )
        return record.state != UploadState.VALIDATING and key == upload(record.tenant, record.id)
    if isinstance(record, JobRecord):
        return record.state == JobState.SUCCEEDED and key == keys.job_checkpoint(
            record.tenant, record.id
        )
    return False


def resume_after_disk_full(
    stores: Stores, app: Celery, *, min_free: int, clock: Clock = time.time
) -> list[str]:
    """Jobs that failed for want of space go back to the queue once there is room again."""
    free = stores.artifacts.free_bytes()
    if free is not None and free < min_free:
        return []

    def starved(job: JobRecord) -> bool:
        return job.error is not None and job.error.code == "disk-full"

    resumed = []
    for job in stores.jobs.list(JobRecord, state=JobState.FAILED, match=starved).items:
        if stores.jobs.update(JobRecord, job.id, lambda r: r.resumed(clock())) is not None:
            log.warning("job %s: there is space again, resuming it", job.id)
            publish_task(stores.jobs, app, JobRecord, job.id, clock)
            resumed.append(job.id)
    return resumed


def collect_garbage(stores: Stores, *, grace: float, clock: Clock = time.time) -> list[str]:
    """Delete blobs older than `grace` seconds that no record needs; returns their keys."""
    cutoff = clock() - grace
    stores.artifacts.sweep_partials(cutoff)
    by_owner: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for key in stores.artifacts.list("tenants"):
        owner = keys.owner(key)
        if owner is not None and owner[1] in COLLECTIONS:
            by_owner[owner].append(key)
    removed = []
    for (tenant, collection, id), blobs in by_owner.items():
        record = stores.jobs.get(COLLECTIONS[collection], id)
        if record is not None and record.tenant != tenant:
            record = None
        for key in blobs:
            if record is not None and not _unneeded(record, key):
                continue
            try:
                if stores.artifacts.modified_at(key) >= cutoff:
                    continue
            except KeyError:  # gone meanwhile
                continue
            stores.artifacts.delete_prefix(key)
            removed.append(key)
    if removed:
        log.warning("collected %d blob(s) no record needs: %s", len(removed), removed[:5])
    return removed


class Housekeeper:
    """Runs the housekeeping in a daemon thread: reap and republish every `interval` seconds,
    collect garbage every `gc_interval` seconds."""

    def __init__(
        self,
        stores: Stores,
        app: Celery,
        *,
        interval: float,
        stale_after: float,
        republish_grace: float,
        gc_interval: float,
        gc_grace: float,
        min_free: int,
    ) -> None:
        self._stores, self._app, self._min_free = stores, app, min_free
        self._interval, self._stale_after = interval, stale_after
        self._republish_grace = republish_grace
        self._gc_interval, self._gc_grace = gc_interval, gc_grace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def pass_once(self, *, collect: bool) -> None:
        store = self._stores.jobs
        reap(store, self._app, stale_after=self._stale_after)
        republish(store, self._app, grace=self._republish_grace)
        resume_after_disk_full(self._stores, self._app, min_free=self._min_free)
        if collect:
            collect_garbage(self._stores, grace=self._gc_grace)

    def _run(self) -> None:
        last_gc = float("-inf")
        while True:
            collect = time.monotonic() - last_gc >= self._gc_interval
            try:
                self.pass_once(collect=collect)
            except Exception:
                log.exception("housekeeping pass failed; retrying")
            if collect:
                last_gc = time.monotonic()
            if self._stop.wait(self._interval):
                return
