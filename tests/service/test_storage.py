"""Both job stores pass one contract, against real SQLite and Redis; both artifact stores pass
another, on a local folder and against a real S3-compatible server (moto's, in a process)."""

from __future__ import annotations

import io
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import ValidationError

from models.contracts.artifacts import Phase
from service.records import (
    ClassifierRecord,
    IllegalTransition,
    JobParams,
    JobRecord,
    JobState,
    Lease,
    ProgressEvent,
    StateEvent,
)
from service.settings import CommonSettings
from service.storage import (
    ArtifactNotFound,
    ArtifactStore,
    JobStore,
    Page,
    StoreUnavailable,
    open_stores,
)
from service.storage.base import UnindexedList
from service.storage.local_blobs import LocalArtifactStore
from service.storage.redis_jobs import RedisJobStore
from service.storage.s3_blobs import PART_BYTES, READ_BUFFER, S3ArtifactStore, s3_client
from service.storage.sqlite_jobs import SqliteJobStore
from tests import records


@pytest.fixture
def store(job_store: JobStore) -> JobStore:
    """Each job store in turn (tests/service/conftest.py)."""
    return job_store


def job(id: str, tenant: str = "a", t: float | None = None, **fields: Any) -> JobRecord:
    record = records.job_record(records.classifier_record(tenant), created_at=t)
    return record.model_copy(update={"id": id, **fields})


def bump(record: JobRecord) -> JobRecord:
    record.sample_count = (record.sample_count or 0) + 1
    return record


def test_create_get_delete(store: JobStore) -> None:
    store.create(job("j1", sample_count=1))
    got = store.get(JobRecord, "j1")
    assert got is not None
    assert got.sample_count == 1
    assert isinstance(got.params, JobParams)  # typed all the way down
    assert store.get(JobRecord, "nope") is None
    assert store.get(ClassifierRecord, "j1") is None  # kinds are separate
    assert store.delete(JobRecord, "j1")
    assert not store.delete(JobRecord, "j1")
    assert store.get(JobRecord, "j1") is None


def test_list_orders_filters_and_pages(store: JobStore) -> None:
    for i in range(5):
        store.create(job(f"j{i}", tenant="a" if i % 2 == 0 else "b", t=100.0 + i, sample_count=i))
    page = store.list(JobRecord, tenant="a")
    assert [r.id for r in page.items] == ["j4", "j2", "j0"]
    assert page.count == 3
    page = store.list(JobRecord, tenant="a", offset=1, limit=1)
    assert [r.id for r in page.items] == ["j2"]
    assert page.count == 3
    assert store.list(JobRecord, tenant="a", offset=2, limit=5).count == 3
    assert store.list(JobRecord, tenant="a", limit=0) == Page(items=[], count=3)
    assert store.list(JobRecord, match=lambda r: (r.sample_count or 0) >= 3).count == 2
    assert store.list(JobRecord).count == 5


def test_lists_filter_by_indexed_fields(store: JobStore) -> None:
    """Every combination of state, classifier and method, per tenant, with its count."""
    for i in range(8):
        store.create(
            job(f"j{i}", t=100.0 + i, classifier_id=f"c{i % 2}", method=("c3", "soft")[i % 4 // 2])
        )
    store.create(job("same-time", t=107.0, classifier_id="c1", method="soft"))  # ties: by id
    store.create(job("other", tenant="b", t=200.0, classifier_id="c1"))
    by_c1 = store.list(JobRecord, tenant="a", where={"classifier_id": "c1"})
    assert [r.id for r in by_c1.items] == ["same-time", "j7", "j5", "j3", "j1"]
    assert by_c1.count == 5
    both = store.list(JobRecord, tenant="a", where={"classifier_id": "c1", "method": "soft"})
    assert [r.id for r in both.items] == ["same-time", "j7", "j3"]
    assert store.list(JobRecord, tenant="a", where={"method": "c3"}, offset=1, limit=2) == Page(
        items=[store.get(JobRecord, "j4"), store.get(JobRecord, "j1")], count=4
    )

    def run(record: JobRecord) -> JobRecord:
        record.state = JobState.RUNNING
        return record

    store.update(JobRecord, "j3", run)
    running = store.list(JobRecord, tenant="a", state="running", where={"method": "soft"})
    assert [r.id for r in running.items] == ["j3"]
    assert store.list(JobRecord, tenant="a", state="queued", where={"method": "soft"}).count == 4
    assert store.delete(JobRecord, "j3")
    assert store.list(JobRecord, tenant="a", state="running").count == 0
    assert store.list(JobRecord, tenant="a", where={"classifier_id": "c1"}).count == 4
    assert store.list(JobRecord, where={}).count == 9
    assert store.list(JobRecord, tenant="b", where={"classifier_id": "c1"}).count == 1
    assert store.list(ClassifierRecord, tenant="a", where={"method": "c3"}).count == 0
    with pytest.raises(UnindexedList):
        store.list(JobRecord, where={"classifier_id": "c1"})  # indexed per tenant only
    with pytest.raises(UnindexedList):
        store.list(JobRecord, tenant="a", where={"dataset_id": "d"})


def test_sqlite_pages_read_an_index(tmp_path: Path) -> None:
    """The query plan of every filtered page: a search of its own index, no scan, no sort."""
    store = SqliteJobStore(tmp_path / "c3.sqlite")
    fields = ("state", "classifier_id", "method")
    for names in (c for n in range(4) for c in itertools.combinations(fields, n)):
        conditions = " AND ".join(f"{name}='x'" for name in ["kind", "tenant", *names])
        plan = " ".join(
            str(row[-1])
            for row in store._conn().execute(
                f"EXPLAIN QUERY PLAN SELECT doc FROM records WHERE {conditions} "
                "ORDER BY created_at DESC, id DESC LIMIT 50"
            )
        )
        index = "_".join(("records_by_tenant", *names))
        assert f"SEARCH records USING INDEX {index} (" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_update_moves_state_index(store: JobStore) -> None:
    store.create(job("j1"))

    def run(record: JobRecord) -> JobRecord:
        record.state = JobState.RUNNING
        return record

    updated = store.update(JobRecord, "j1", run)
    assert updated is not None
    assert updated.state == JobState.RUNNING
    assert store.list(JobRecord, state="queued").count == 0
    assert [r.id for r in store.list(JobRecord, state="running").items] == ["j1"]
    assert store.update(JobRecord, "j1", lambda r: None) is None  # precondition failed
    assert store.update(JobRecord, "missing", run) is None


def test_writes_are_validated_and_follow_the_state_machine(store: JobStore) -> None:
    store.create(job("j1"))

    def finish_unstarted(record: JobRecord) -> JobRecord:
        record.state = JobState.SUCCEEDED  # queued → succeeded: no such edge
        return record

    with pytest.raises(IllegalTransition, match="queued → succeeded"):
        store.update(JobRecord, "j1", finish_unstarted)

    def corrupt(record: JobRecord) -> JobRecord:
        record.params.classes.append(-1)  # a nested change bypasses assignment checks ...
        return record

    with pytest.raises(ValidationError):  # ... but not the store's validation
        store.update(JobRecord, "j1", corrupt)
    unchanged = store.get(JobRecord, "j1")
    assert unchanged is not None
    assert unchanged.state == JobState.QUEUED
    assert -1 not in unchanged.params.classes


def test_concurrent_updates_are_serialised(store: JobStore) -> None:
    store.create(job("j1", sample_count=0))

    def worker() -> None:
        for _ in range(25):
            store.update(JobRecord, "j1", bump)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.get(JobRecord, "j1")
    assert final is not None
    assert final.sample_count == 100


def progress(step: int) -> ProgressEvent:
    return ProgressEvent(
        phase=Phase.TRAINING, step=step, total_steps=9, fraction=step / 9, updated_at=1.0
    )


def test_events_and_keys(store: JobStore) -> None:
    assert [store.append_event("j1", progress(i)) for i in range(3)] == [1, 2, 3]
    assert store.read_events("j1", after=1) == [(2, progress(1)), (3, progress(2))]
    assert store.read_events("j1", after=0, limit=1) == [(1, progress(0))]
    store.append_event("j1", StateEvent(state=JobState.SUCCEEDED))
    assert store.read_events("j1", after=3) == [(4, StateEvent(state=JobState.SUCCEEDED))]
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
    first.create(job("j1", sample_count=7))
    first.append_event("j1", progress(1))
    first.close()
    second = SqliteJobStore(tmp_path / "c3.sqlite")
    reopened = second.get(JobRecord, "j1")
    assert reopened is not None
    assert reopened.sample_count == 7
    assert second.read_events("j1") == [(1, progress(1))]


def test_version_1_records_are_read(tmp_path: Path) -> None:
    """A data folder written by version 1 (bare lease token, checkpoint time) still opens."""
    store = SqliteJobStore(tmp_path / "c3.sqlite")
    v1 = json.loads(job("j1", state=JobState.RUNNING).model_dump_json())
    v1["task"] = {"state": "running", "attempts": 1, "lease": "abc", "heartbeat_at": 5.0}
    v1["training_seconds_at_checkpoint"] = 3.5
    store._conn().execute(
        "INSERT INTO records (kind, id, tenant, state, created_at, doc) VALUES (?,?,?,?,?,?)",
        ("job", "j1", "a", "running", 1.0, json.dumps(v1)),
    )
    record = store.get(JobRecord, "j1")
    assert record is not None
    assert record.task.lease == Lease(token="abc", heartbeat_at=5.0)


VERSION_1_SCHEMA = """
CREATE TABLE records (
    kind TEXT NOT NULL, id TEXT NOT NULL, tenant TEXT NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (kind, id));
CREATE INDEX records_tenant ON records (kind, tenant, created_at);
CREATE INDEX records_state ON records (kind, state);
CREATE TABLE events (
    stream TEXT NOT NULL, seq INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (stream, seq));
CREATE TABLE keys (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (namespace, key));
"""


def old_jobs() -> list[JobRecord]:
    return [
        job("old1", t=1.0, classifier_id="c1", method="soft"),
        job("old2", t=2.0, classifier_id="c2"),
        job("old3", tenant="b", t=3.0, classifier_id="c1"),
    ]


def assert_old_jobs_listed(store: JobStore) -> None:
    """The records written by version 1 are in the indexed lists, and new ones join them."""
    store.create(job("new", t=4.0, classifier_id="c1"))
    by_c1 = store.list(JobRecord, tenant="a", where={"classifier_id": "c1"})
    assert ([r.id for r in by_c1.items], by_c1.count) == (["new", "old1"], 2)
    assert store.list(JobRecord, tenant="a", where={"method": "soft"}).count == 1
    assert store.list(JobRecord, state="queued").count == 4
    assert store.list(JobRecord, tenant="a", limit=1).count == 3


def test_sqlite_of_version_1_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "c3.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_1_SCHEMA)
        conn.executemany(
            "INSERT INTO records (kind, id, tenant, state, created_at, doc) VALUES (?,?,?,?,?,?)",
            [
                ("job", r.id, r.tenant, r.state, r.created_at, r.model_dump_json())
                for r in old_jobs()
            ],
        )
    conn.close()
    store = SqliteJobStore(path)
    assert_old_jobs_listed(store)
    store.close()
    reopened = SqliteJobStore(path)  # the migration runs once: counts are not rebuilt twice
    assert reopened.list(JobRecord, tenant="a", where={"classifier_id": "c1"}).count == 2
    (version,) = reopened._conn().execute("PRAGMA user_version").fetchone()
    assert version == 2


def test_redis_of_version_1_is_migrated(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for r in old_jobs():
        client.set(f"v1:rec:job:{r.id}", r.model_dump_json())
        for index in (f"v1:tenant:job:{r.tenant}", f"v1:state:job:{r.state}", "v1:all:job"):
            client.zadd(index, {r.id: r.created_at})
    store = RedisJobStore(redis_url, prefix="v1:")
    assert_old_jobs_listed(store)
    assert client.keys("v1:tenant:*") == client.keys("v1:all:*") == []  # version 1's sets
    assert client.get("v1:schema") == b"2"
    client.close()


def test_redis_records_survive_a_redis_restart(persistent_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisJobStore(persistent_redis.url)
    store.create(job("j1", sample_count=7))
    store.append_event("j1", progress(1))
    persistent_redis.restart()
    store = RedisJobStore(persistent_redis.url)
    reopened = store.get(JobRecord, "j1")
    assert reopened is not None
    assert reopened.sample_count == 7
    assert store.list(JobRecord, state="queued").count == 1
    assert store.read_events("j1") == [(1, progress(1))]


def test_redis_down_is_store_unavailable() -> None:
    from tests.conftest import free_port

    store = RedisJobStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.get(JobRecord, "x")


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """Each artifact store as the factory builds it from settings."""
    settings = CommonSettings(data_dir=tmp_path)
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_settings")
        settings = CommonSettings(
            data_dir=tmp_path, **{k.removeprefix("C3_").lower(): v for k, v in s3.items()}
        )
    stores = open_stores(settings)
    yield stores.artifacts
    stores.close()


def test_blob_store(blobs: ArtifactStore) -> None:
    blobs.put("t/a/x.bin", b"hello")
    assert blobs.get("t/a/x.bin") == b"hello"
    assert blobs.size("t/a/x.bin") == 5
    assert abs(blobs.modified_at("t/a/x.bin") - time.time()) < 5
    assert blobs.put_stream("t/a/y.bin", iter([b"ab", b"cd"])) == 4
    blobs.put("t/a/sub/z.bin", b"")
    blobs.put("t/ab", b"a sibling, not under t/a")
    assert blobs.list("t/a") == ["t/a/sub/z.bin", "t/a/x.bin", "t/a/y.bin"]
    assert blobs.exists("t/a/y.bin")
    assert not blobs.exists("t/a")  # a folder is not a blob
    for missing in (blobs.get, blobs.size, blobs.open, blobs.modified_at):
        with pytest.raises(ArtifactNotFound):
            missing("t/a/none")
    for bad in ("../escape", "/abs", "t//x", ""):
        with pytest.raises(ValueError, match="bad artifact key"):
            blobs.put(bad, b"x")

    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        blobs.put_stream("t/a/z.bin", failing())
    assert not blobs.exists("t/a/z.bin")  # no half-written blob under the real key
    assert blobs.delete_prefix("t/a/x.bin") == 1
    assert blobs.list("t/a") == ["t/a/sub/z.bin", "t/a/y.bin"]
    assert blobs.delete_prefix("t/a") == 2
    assert blobs.list("t") == ["t/ab"]
    assert blobs.delete_prefix("t/none") == 0


def test_blob_reads_by_range_and_seek(blobs: ArtifactStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    blobs.put("t/big", data)
    assert blobs.read_range("t/big", 1000, 24) == data[1000:1024]
    assert blobs.read_range("t/big", len(data) - 3, 10) == data[-3:]  # fewer at the end
    assert blobs.read_range("t/big", len(data) + 5, 10) == b""
    assert blobs.read_range("t/big", 0, 0) == b""
    with blobs.open("t/big") as f:
        assert f.read(10) == data[:10]
        f.seek(-100, io.SEEK_END)
        assert f.tell() == len(data) - 100
        assert f.read() == data[-100:]
        f.seek(500_000)
        assert f.read(300_000) == data[500_000:800_000]
    assert blobs.get("t/big") == data


def test_large_blobs_stream_in_parts(blobs: ArtifactStore) -> None:
    """A blob of two parts and a bit: written in parts (S3: a multipart upload) and read
    back whole."""
    block = os.urandom(1024 * 1024)
    count = 2 * PART_BYTES // len(block) + 1
    assert blobs.put_stream("t/large", iter([block] * count)) == count * len(block)
    assert blobs.size("t/large") == count * len(block)
    with blobs.open("t/large") as f:
        for _ in range(count):
            assert f.read(len(block)) == block
        assert f.read(1) == b""


def test_partial_writes_are_swept(blobs: ArtifactStore, request: pytest.FixtureRequest) -> None:
    """What a writer killed mid-write leaves (a temporary file; an unfinished multipart
    upload) is invisible to lists and removed by `sweep_partials` once old enough."""
    blobs.put("t/done", b"x")
    if isinstance(blobs, LocalArtifactStore):
        (request.getfixturevalue("tmp_path") / "blobs" / "t" / ".tmp-crashed").write_bytes(b"x")
    else:
        s3 = request.getfixturevalue("s3_settings")
        client = s3_client(s3["C3_S3_ENDPOINT_URL"], "us-east-1", "test", "test")
        client.create_multipart_upload(Bucket=s3["C3_S3_BUCKET"], Key="t/crashed")
    assert blobs.list("t") == ["t/done"]
    if isinstance(blobs, LocalArtifactStore):  # moto dates every upload 2010-11-10
        assert blobs.sweep_partials(time.time() - 3600) == 0  # too young
    assert blobs.sweep_partials(time.time() + 5) == 1
    assert blobs.sweep_partials(time.time() + 5) == 0
    assert blobs.list("t") == ["t/done"]


def test_presigned_urls(blobs: ArtifactStore) -> None:
    blobs.put("t/file.npz", b"payload")
    url = blobs.presigned_url("t/file.npz", 60, "application/octet-stream", "x.npz")
    if isinstance(blobs, LocalArtifactStore):
        assert url is None  # no server of its own: the API streams the file
        return
    assert url is not None
    got = httpx.get(url)
    assert got.status_code == 200
    assert got.content == b"payload"
    assert got.headers["content-disposition"] == 'attachment; filename="x.npz"'
    assert httpx.get(url, headers={"Range": "bytes=3-"}).content == b"load"
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=60" in url


def test_an_s3_reader_never_mixes_versions(s3_settings: dict[str, str], tmp_path: Path) -> None:
    blobs = open_stores(
        CommonSettings(
            data_dir=tmp_path, **{k.removeprefix("C3_").lower(): v for k, v in s3_settings.items()}
        )
    ).artifacts
    size = 3 * READ_BUFFER  # beyond what the reader buffers
    blobs.put("t/x", b"a" * size)
    with blobs.open("t/x") as f:
        assert f.read(1) == b"a"
        blobs.put("t/x", b"b" * size)
        f.seek(size - 10)
        with pytest.raises(ArtifactNotFound, match="replaced or deleted while read"):
            f.read(10)


def test_s3_down_is_store_unavailable() -> None:
    from tests.conftest import free_port

    client = s3_client(f"http://127.0.0.1:{free_port()}", "us-east-1", "test", "test")
    blobs = S3ArtifactStore(client, "bucket")
    with pytest.raises(StoreUnavailable):
        blobs.ping()
    with pytest.raises(StoreUnavailable):
        blobs.get("t/x")
