"""Both job stores and the blob store pass one contract, against real SQLite and Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import ArtifactNotFound, JobStore, StoreUnavailable
from service.storage.local_blobs import LocalArtifactStore
from service.storage.redis_jobs import RedisJobStore
from service.storage.sqlite_jobs import SqliteJobStore


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    s: JobStore
    if request.param == "sqlite":
        s = SqliteJobStore(tmp_path / "c3.sqlite")
    else:
        s = RedisJobStore(request.getfixturevalue("redis_url"), prefix="test:")
    yield s
    s.close()


def doc(id: str, tenant: str = "a", state: str = "queued", t: float | None = None, **kw: object):
    return {"id": id, "tenant": tenant, "state": state, "created_at": t or time.time(), **kw}


def test_create_get_delete(store: JobStore) -> None:
    store.create("job", doc("j1", n=1))
    assert store.get("job", "j1")["n"] == 1  # type: ignore[index]
    assert store.get("job", "nope") is None
    assert store.get("classifier", "j1") is None  # kinds are separate
    assert store.delete("job", "j1")
    assert not store.delete("job", "j1")
    assert store.get("job", "j1") is None


def test_list_orders_filters_and_pages(store: JobStore) -> None:
    for i in range(5):
        store.create("job", doc(f"j{i}", tenant="a" if i % 2 == 0 else "b", t=100.0 + i, n=i))
    page = store.list("job", tenant="a")
    assert [d["id"] for d in page.items] == ["j4", "j2", "j0"]
    assert page.count == 3
    page = store.list("job", tenant="a", offset=1, limit=1)
    assert [d["id"] for d in page.items] == ["j2"]
    assert page.count == 3
    assert store.list("job", match=lambda d: d["n"] >= 3).count == 2
    assert store.list("job").count == 5


def test_update_moves_state_index(store: JobStore) -> None:
    store.create("job", doc("j1"))

    def run(d: dict) -> dict:
        d["state"] = "running"
        return d

    assert store.update("job", "j1", run)["state"] == "running"  # type: ignore[index]
    assert store.list("job", state="queued").count == 0
    assert [d["id"] for d in store.list("job", state="running").items] == ["j1"]
    assert store.update("job", "j1", lambda d: None) is None  # precondition failed: unchanged
    assert store.update("job", "missing", run) is None


def test_concurrent_updates_are_serialised(store: JobStore) -> None:
    store.create("job", doc("j1", n=0))

    def bump(d: dict) -> dict:
        d["n"] += 1
        return d

    def worker() -> None:
        for _ in range(25):
            store.update("job", "j1", bump)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("job", "j1")["n"] == 100  # type: ignore[index]


def test_events_and_keys(store: JobStore) -> None:
    assert [store.append_event("j1", {"i": i}) for i in range(3)] == [1, 2, 3]
    assert store.read_events("j1", after=1) == [(2, {"i": 1}), (3, {"i": 2})]
    assert store.read_events("j1", after=0, limit=1) == [(1, {"i": 0})]
    store.delete_events("j1")
    assert store.read_events("j1") == []
    assert store.put_key("ns", "k", "v1") is None
    assert store.put_key("ns", "k", "v2") == "v1"  # first writer wins
    assert store.get_key("ns", "k") == "v1"
    assert store.count_keys("ns") == 1
    store.delete_key("ns", "k")
    assert store.get_key("ns", "k") is None


def test_sqlite_state_survives_reopen(tmp_path: Path) -> None:
    first = SqliteJobStore(tmp_path / "c3.sqlite")
    first.create("job", doc("j1", n=7))
    first.append_event("j1", {"step": 1})
    first.close()
    second = SqliteJobStore(tmp_path / "c3.sqlite")
    assert second.get("job", "j1")["n"] == 7  # type: ignore[index]
    assert second.read_events("j1") == [(1, {"step": 1})]


def test_redis_records_survive_a_redis_restart(persistent_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisJobStore(persistent_redis.url)
    store.create("job", doc("j1", n=7))
    store.append_event("j1", {"step": 1})
    persistent_redis.restart()
    store = RedisJobStore(persistent_redis.url)
    assert store.get("job", "j1")["n"] == 7  # type: ignore[index]
    assert store.list("job", state="queued").count == 1
    assert store.read_events("j1") == [(1, {"step": 1})]


def test_redis_down_is_store_unavailable() -> None:
    from tests.conftest import free_port

    store = RedisJobStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.get("job", "x")


def test_blob_store(tmp_path: Path) -> None:
    blobs = LocalArtifactStore(tmp_path / "blobs")
    blobs.put("t/a/x.bin", b"hello")
    assert blobs.get("t/a/x.bin") == b"hello"
    assert blobs.size("t/a/x.bin") == 5
    assert blobs.put_stream("t/a/y.bin", iter([b"ab", b"cd"])) == 4
    assert blobs.list("t/a") == ["t/a/x.bin", "t/a/y.bin"]
    assert blobs.exists("t/a/y.bin")
    with pytest.raises(ArtifactNotFound):
        blobs.get("t/a/none")
    with pytest.raises(ValueError, match="bad artifact key"):
        blobs.put("../escape", b"x")

    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        blobs.put_stream("t/a/z.bin", failing())
    assert not blobs.exists("t/a/z.bin")  # no half-written blob under the real key
    assert blobs.list("t/a") == ["t/a/x.bin", "t/a/y.bin"]
    assert blobs.delete_prefix("t/a") == 2
    assert blobs.list("t") == []
