"""Nothing stays stuck or orphaned after a crash: unpublished records get their message,
orphaned and partial blobs are collected (real SQLite, real blobs, a real Redis broker)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from service.background import claim, republish
from service.housekeeping import collect_garbage
from service.queue import GPU_QUEUE, VALIDATE_QUEUE, make_celery
from service.records import ClassifierRecord, JobRecord, JobState, TaskState, UploadState
from service.settings import CommonSettings
from service.storage import Stores, keys
from service.storage.local_blobs import LocalArtifactStore
from service.storage.redis_jobs import RedisJobStore
from service.storage.sqlite_jobs import SqliteJobStore
from tests import records


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    opened = Stores(SqliteJobStore(tmp_path / "c3.sqlite"), LocalArtifactStore(tmp_path / "blobs"))
    yield opened
    opened.close()


def messages(r: redis.Redis, queue: str) -> list[str]:
    return [json.loads(m)["headers"]["argsrepr"] for m in r.lrange(queue, 0, -1)]


def test_records_a_crash_left_unpublished_get_their_message(redis_url: str) -> None:
    store = RedisJobStore(redis_url, "hk:")
    app: Any = make_celery(CommonSettings(redis_url=redis_url))
    r = redis.Redis.from_url(redis_url)
    now = time.time()
    old, fresh, sent = (records.job_record(records.classifier_record()) for _ in range(3))
    old.task.queued_at = now - 60  # the API died before publishing it
    fresh.task.queued_at = now  # its API may still be about to publish it
    sent.task.queued_at, sent.task.published_at = now - 60, now - 60
    upload = records.classifier_record(state=UploadState.VALIDATING)
    upload.task.state, upload.task.queued_at = TaskState.QUEUED, now - 60
    for record in (old, fresh, sent, upload):
        store.create(record)
    try:
        assert sorted(republish(store, app, grace=10)) == sorted([old.id, upload.id])
        assert messages(r, GPU_QUEUE) == [f"['{old.id}']"]
        assert messages(r, VALIDATE_QUEUE) == [f"['{upload.id}']"]
        marked = store.get(JobRecord, old.id)
        assert marked is not None
        assert marked.task.published_at is not None
        assert republish(store, app, grace=10) == []  # sent once, not again
        claimed = claim(store, JobRecord, old.id, max_attempts=3)
        assert claimed is not None  # the message's claim works as for any other
        assert claim(store, JobRecord, old.id, max_attempts=3) is None  # a duplicate: dropped
    finally:
        store.close()


def put_old(stores: Stores, key: str, age: float = 3600) -> None:
    stores.artifacts.put(key, b"x")
    path = Path(stores.artifacts._root) / key  # type: ignore[attr-defined]
    os.utime(path, (time.time() - age, time.time() - age))


def test_orphaned_unneeded_and_partial_blobs_are_collected(stores: Stores) -> None:
    ready = records.classifier_record("t")
    validating = records.classifier_record("t", state=UploadState.VALIDATING)
    validating.task.state = TaskState.QUEUED
    done = records.job_record(ready).model_copy(update={"state": JobState.SUCCEEDED})
    running = records.job_record(ready).model_copy(update={"state": JobState.RUNNING})
    for record in (ready, validating, done, running):
        stores.jobs.create(record)
    kept = [
        keys.classifier_canonical("t", ready.id),
        keys.classifier_upload("t", validating.id),  # still to be validated
        keys.job_checkpoint("t", running.id),  # a running job resumes from it
        keys.job_generator("t", done.id),
    ]
    collected = [
        keys.classifier_upload("t", ready.id),  # validated: the upload was to be deleted
        keys.job_checkpoint("t", done.id),  # succeeded: the checkpoint was to be deleted
        keys.classifier_upload("t", "clf_orphan"),  # stored, then the API died
        keys.job_generator("t", "job_deleted"),  # a delete that was interrupted
        keys.classifier_canonical("u", ready.id),  # another tenant's path: not the owner
    ]
    for key in kept + collected:
        put_old(stores, key)
    young = keys.classifier_upload("t", "clf_just_stored")
    stores.artifacts.put(young, b"x")  # its record is about to be written
    partial = Path(stores.artifacts._root) / "tenants/t/jobs/.tmp-abc"  # type: ignore[attr-defined]
    partial.write_bytes(b"half")
    os.utime(partial, (time.time() - 3600, time.time() - 3600))

    assert sorted(collect_garbage(stores, grace=600)) == sorted(collected)
    assert all(stores.artifacts.exists(key) for key in [*kept, young])
    assert not any(stores.artifacts.exists(key) for key in collected)
    assert not partial.exists()
    assert collect_garbage(stores, grace=600) == []
    assert stores.jobs.get(ClassifierRecord, ready.id) is not None  # records are untouched
