"""The lease lifecycle that keeps jobs from being lost or run twice, with a real store and a
real broker (Redis), messages counted in the broker itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from service.background import Heartbeat, claim, new_task, reap, recover
from service.queue import GPU_QUEUE, RUN_INVERSION, make_celery
from service.settings import CommonSettings
from service.storage.redis_jobs import RedisJobStore


@pytest.fixture
def env(redis_url: str) -> Iterator[tuple[RedisJobStore, object, redis.Redis]]:
    settings = CommonSettings(redis_url=redis_url, redis_prefix="bg:")
    store = RedisJobStore(redis_url, "bg:")
    yield store, make_celery(settings), redis.Redis.from_url(redis_url)
    store.close()


def queued_job(store: RedisJobStore, id: str, t: float | None = None) -> None:
    store.create(
        "job",
        {
            "id": id,
            "tenant": "a",
            "state": "queued",
            "created_at": t or time.time(),
            "task": new_task(),
        },
    )


def messages(r: redis.Redis) -> list[str]:
    """Record ids of the task messages waiting in the gpu queue."""
    return [json.loads(m)["headers"]["argsrepr"] for m in r.lrange(GPU_QUEUE, 0, -1)]


def test_only_one_claim_wins(env) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = env
    queued_job(store, "j1")
    first = claim(store, "job", "j1", max_attempts=3)
    assert first is not None
    lease, doc = first
    assert doc["state"] == "running"
    assert doc["task"]["attempts"] == 1
    assert claim(store, "job", "j1", max_attempts=3) is None  # a duplicate message is dropped
    assert lease.renew(store) is not None


def test_stale_lease_is_reaped_and_old_worker_fenced_off(env) -> None:  # type: ignore[no-untyped-def]
    store, app, r = env
    queued_job(store, "j1")
    lease, _ = claim(store, "job", "j1", max_attempts=3)  # type: ignore[misc]
    assert reap(store, app, stale_after=60) == []  # fresh heartbeat: left alone
    time.sleep(0.3)
    assert reap(store, app, stale_after=0.2) == ["j1"]
    doc = store.get("job", "j1")
    assert doc["state"] == "queued"
    assert doc["task"]["state"] == "queued"
    assert messages(r) == ["['j1']"]
    assert lease.renew(store) is None  # the old worker learns it lost the job
    assert lease.finish(store, lambda d: d) is None  # and cannot write a result
    second = claim(store, "job", "j1", max_attempts=3)
    assert second is not None
    assert second[1]["task"]["attempts"] == 2


def test_worker_dying_too_often_fails_the_job(env) -> None:  # type: ignore[no-untyped-def]
    store, app, _ = env
    queued_job(store, "j1")
    for _ in range(2):
        assert claim(store, "job", "j1", max_attempts=2) is not None
        time.sleep(0.15)
        reap(store, app, stale_after=0.1)
    assert claim(store, "job", "j1", max_attempts=2) is None
    doc = store.get("job", "j1")
    assert doc["state"] == "failed"  # type: ignore[index]
    assert "died 2 times" in doc["error"]["detail"]  # type: ignore[index]


def test_heartbeat_renews_and_notices_loss(env) -> None:  # type: ignore[no-untyped-def]
    store, app, _ = env
    queued_job(store, "j1")
    lease, _ = claim(store, "job", "j1", max_attempts=3)  # type: ignore[misc]
    seen: list[dict] = []
    with Heartbeat(store, lease, interval=0.1, on_renew=seen.append) as beat:
        time.sleep(0.5)
        assert reap(store, app, stale_after=0.3) == []  # kept alive by the thread
        store.update("job", "j1", lambda d: {**d, "task": {**d["task"], "lease": "other"}})
        assert beat.lost.wait(2)
    assert len(seen) >= 3


def test_recover_requeues_unfinished_in_creation_order(env) -> None:  # type: ignore[no-untyped-def]
    store, app, r = env
    queued_job(store, "old", t=1.0)
    queued_job(store, "mid", t=2.0)
    queued_job(store, "done", t=3.0)
    claim(store, "job", "mid", max_attempts=3)
    store.update("job", "done", lambda d: {**d, "state": "succeeded", "task": {"state": "done"}})
    app.send_task(RUN_INVERSION, args=["stale-message"])
    assert recover(store, app) == ["old", "mid"]
    assert messages(r) == ["['mid']", "['old']"]  # LPUSH order: 'old' is consumed first
    assert store.get("job", "mid")["state"] == "queued"  # type: ignore[index]
