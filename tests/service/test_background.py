"""The lease lifecycle that keeps jobs from being lost or run twice, with a real store and a
real broker (Redis), messages counted in the broker itself; time moved by a fake clock. And the
state machines, table-driven."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from service.background import Heartbeat, claim, reap, recover
from service.queue import GPU_QUEUE, RUN_INVERSION, make_celery
from service.records import (
    JOB_TRANSITIONS,
    TASK_TRANSITIONS,
    UPLOAD_TRANSITIONS,
    ClassifierRecord,
    IllegalTransition,
    JobRecord,
    JobState,
    Lease,
    TaskState,
    UploadState,
    check_transition,
)
from service.settings import CommonSettings
from service.storage.redis_jobs import RedisJobStore
from tests import records


@dataclass
class FakeClock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def env(redis_url: str) -> Iterator[tuple[RedisJobStore, Any, redis.Redis]]:
    settings = CommonSettings(redis_url=redis_url, redis_prefix="bg:")
    store = RedisJobStore(redis_url, "bg:")
    yield store, make_celery(settings), redis.Redis.from_url(redis_url)
    store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def queued_job(store: RedisJobStore, id: str, t: float | None = None) -> None:
    record = records.job_record(records.classifier_record("a"), created_at=t)
    store.create(record.model_copy(update={"id": id}))


def messages(r: redis.Redis) -> list[str]:
    """Record ids of the task messages waiting in the gpu queue."""
    return [json.loads(m)["headers"]["argsrepr"] for m in r.lrange(GPU_QUEUE, 0, -1)]


def test_only_one_claim_wins(env: Any) -> None:
    store, _, _ = env
    queued_job(store, "j1")
    first = claim(store, JobRecord, "j1", max_attempts=3)
    assert first is not None
    lease, record = first
    assert record.state == JobState.RUNNING
    assert record.task.attempts == 1
    assert claim(store, JobRecord, "j1", max_attempts=3) is None  # a duplicate message
    assert lease.renew(store) is not None


def test_stale_lease_is_reaped_and_old_worker_fenced_off(env: Any, clock: FakeClock) -> None:
    store, app, r = env
    queued_job(store, "j1")
    lease, _ = claim(store, JobRecord, "j1", max_attempts=3, clock=clock)  # type: ignore[misc]
    clock.advance(59)
    assert reap(store, app, stale_after=60, clock=clock) == []  # fresh enough: left alone
    clock.advance(2)
    assert reap(store, app, stale_after=60, clock=clock) == ["j1"]
    record = store.get(JobRecord, "j1")
    assert record is not None
    assert record.state == JobState.QUEUED
    assert record.task.state == TaskState.QUEUED
    assert messages(r) == ["['j1']"]
    assert lease.renew(store) is None  # the old worker learns it lost the job
    assert lease.finish(store, lambda d: d) is None  # and cannot write a result
    second = claim(store, JobRecord, "j1", max_attempts=3, clock=clock)
    assert second is not None
    assert second[1].task.attempts == 2


def test_renewal_keeps_a_lease_fresh(env: Any, clock: FakeClock) -> None:
    store, app, _ = env
    queued_job(store, "j1")
    lease, _ = claim(store, JobRecord, "j1", max_attempts=3, clock=clock)  # type: ignore[misc]
    for _ in range(5):
        clock.advance(50)
        assert lease.renew(store) is not None
        assert reap(store, app, stale_after=60, clock=clock) == []


def test_worker_dying_too_often_fails_the_job(env: Any, clock: FakeClock) -> None:
    store, app, _ = env
    queued_job(store, "j1")
    for _ in range(2):
        assert claim(store, JobRecord, "j1", max_attempts=2, clock=clock) is not None
        clock.advance(31)
        assert reap(store, app, stale_after=30, clock=clock) == ["j1"]
    assert claim(store, JobRecord, "j1", max_attempts=2, clock=clock) is None
    record = store.get(JobRecord, "j1")
    assert record is not None
    assert record.state == JobState.FAILED
    assert record.error is not None
    assert "died 2 times" in record.error.detail


def test_heartbeat_renews_and_notices_loss(env: Any) -> None:
    store, _, _ = env
    queued_job(store, "j1")
    lease, _ = claim(store, JobRecord, "j1", max_attempts=3)  # type: ignore[misc]
    seen: list[JobRecord] = []
    with Heartbeat(store, lease, interval=0.05, on_renew=seen.append) as beat:
        while len(seen) < 3:
            time.sleep(0.01)
        beats = [r.task.lease.heartbeat_at for r in seen if r.task.lease is not None]
        assert beats == sorted(beats)

        def steal(record: JobRecord) -> JobRecord:
            record.task.lease = Lease(token="other", heartbeat_at=time.time())
            return record

        store.update(JobRecord, "j1", steal)
        assert beat.lost.wait(2)


def test_recover_requeues_unfinished_in_creation_order(env: Any) -> None:
    store, app, r = env
    queued_job(store, "old", t=1.0)
    queued_job(store, "mid", t=2.0)
    queued_job(store, "done", t=3.0)
    claim(store, JobRecord, "mid", max_attempts=3)
    finished = claim(store, JobRecord, "done", max_attempts=3)
    assert finished is not None
    finished[0].finish(store, lambda d: d.model_copy(update={"state": JobState.SUCCEEDED}))
    app.send_task(RUN_INVERSION, args=["stale-message"])
    assert recover(store, app) == ["old", "mid"]
    assert messages(r) == ["['mid']", "['old']"]  # LPUSH order: 'old' is consumed first
    mid = store.get(JobRecord, "mid")
    assert mid is not None
    assert mid.state == JobState.QUEUED


# --- the state machines, written once in service.records ---------------------------------------


def _job(state: JobState, task: TaskState = TaskState.DONE) -> JobRecord:
    record = records.job_record(records.classifier_record())
    return record.model_copy(update={"state": state, "task": record.task.model_copy(
        update={"state": task})})  # fmt: skip


@pytest.mark.parametrize(("before", "after"), list(itertools.product(JobState, JobState)))
def test_job_transitions_table(before: JobState, after: JobState) -> None:
    allowed = before == after or (before, after) in JOB_TRANSITIONS
    move = lambda: check_transition(_job(before), _job(after))  # noqa: E731
    if allowed:
        move()
    else:
        with pytest.raises(IllegalTransition, match=f"{before} → {after}"):
            move()


def test_the_job_state_machine() -> None:
    """Written out once more, as a reviewer reads it: every move the job API and the workers
    make, and nothing else (a succeeded job is final)."""
    assert {(a.value, b.value) for a, b in JOB_TRANSITIONS} == {
        ("queued", "running"), ("queued", "cancelled"), ("queued", "failed"),
        ("running", "queued"), ("running", "succeeded"), ("running", "failed"),
        ("running", "cancelled"), ("failed", "queued"), ("cancelled", "queued"),
    }  # fmt: skip
    assert not any(a == JobState.SUCCEEDED for a, _ in JOB_TRANSITIONS)


@pytest.mark.parametrize(("before", "after"), list(itertools.product(TaskState, TaskState)))
def test_task_transitions_table(before: TaskState, after: TaskState) -> None:
    allowed = before == after or (before, after) in TASK_TRANSITIONS
    move = lambda: check_transition(  # noqa: E731
        _job(JobState.QUEUED, before), _job(JobState.QUEUED, after)
    )
    if allowed:
        move()
    else:
        with pytest.raises(IllegalTransition, match="task state"):
            move()


@pytest.mark.parametrize(("before", "after"), list(itertools.product(UploadState, UploadState)))
def test_upload_transitions_table(before: UploadState, after: UploadState) -> None:
    def upload(state: UploadState) -> ClassifierRecord:
        return records.classifier_record(state=state)

    allowed = before == after or (before, after) in UPLOAD_TRANSITIONS
    if allowed:
        check_transition(upload(before), upload(after))
    else:
        with pytest.raises(IllegalTransition):
            check_transition(upload(before), upload(after))
