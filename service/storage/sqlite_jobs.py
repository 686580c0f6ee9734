"""Job store on SQLite: the embedded default. One file shared by the API and worker processes
(WAL mode, a connection per thread); updates run under `BEGIN IMMEDIATE`, so a mutator sees
and replaces the record with no other writer in between."""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from service.records import JobEvent, Record
from service.storage.base import (
    Mutator,
    Page,
    R,
    StoreUnavailable,
    decode,
    decode_event,
    encode,
    encode_event,
    mutated,
    translate_errors,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, id TEXT NOT NULL, tenant TEXT NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (kind, id));
CREATE INDEX IF NOT EXISTS records_tenant ON records (kind, tenant, created_at);
CREATE INDEX IF NOT EXISTS records_state ON records (kind, state);
CREATE TABLE IF NOT EXISTS events (
    stream TEXT NOT NULL, seq INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (stream, seq));
CREATE TABLE IF NOT EXISTS keys (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (namespace, key));
"""


@translate_errors(sqlite3.OperationalError)
class SqliteJobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self._path, timeout=30, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self._path}: {exc}") from exc
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def ping(self) -> None:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    def create(self, record: Record) -> None:
        self._conn().execute(
            "INSERT INTO records (kind, id, tenant, state, created_at, doc) VALUES (?,?,?,?,?,?)",
            (
                record.KIND,
                record.id,
                record.tenant,
                record.state,
                record.created_at,
                encode(record),
            ),
        )

    def get(self, model: type[R], id: str) -> R | None:
        row = (
            self._conn()
            .execute("SELECT doc FROM records WHERE kind=? AND id=?", (model.KIND, id))
            .fetchone()
        )
        return decode(model, row[0]) if row else None

    def update(self, model: type[R], id: str, mutate: Mutator[R]) -> R | None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT doc FROM records WHERE kind=? AND id=?", (model.KIND, id)
            ).fetchone()
            new = mutated(model, row[0], mutate) if row else None
            if new is not None:
                conn.execute(
                    "UPDATE records SET state=?, doc=? WHERE kind=? AND id=?",
                    (new.state, encode(new), model.KIND, id),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new

    def delete(self, model: type[Record], id: str) -> bool:
        cur = self._conn().execute("DELETE FROM records WHERE kind=? AND id=?", (model.KIND, id))
        return cur.rowcount > 0

    def list(
        self,
        model: type[R],
        *,
        tenant: str | None = None,
        state: str | None = None,
        match: Callable[[R], bool] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> Page[R]:
        sql, args = "SELECT doc FROM records WHERE kind=?", [model.KIND]
        if tenant is not None:
            sql, args = sql + " AND tenant=?", [*args, tenant]
        if state is not None:
            sql, args = sql + " AND state=?", [*args, state]
        rows = self._conn().execute(sql + " ORDER BY created_at DESC, id DESC", args)
        records = (decode(model, r[0]) for r in rows)
        matching = [r for r in records if match is None or match(r)]
        end = None if limit is None else offset + limit
        return Page(items=matching[offset:end], count=len(matching))

    def append_event(self, stream: str, event: JobEvent) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE stream=?", (stream,)
            ).fetchone()
            conn.execute(
                "INSERT INTO events (stream, seq, doc) VALUES (?,?,?)",
                (stream, last + 1, encode_event(event)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(last) + 1

    def read_events(
        self, stream: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, JobEvent]]:
        rows = self._conn().execute(
            "SELECT seq, doc FROM events WHERE stream=? AND seq>? ORDER BY seq LIMIT ?",
            (stream, after, limit),
        )
        return [(int(seq), decode_event(doc)) for seq, doc in rows]

    def delete_events(self, stream: str) -> None:
        self._conn().execute("DELETE FROM events WHERE stream=?", (stream,))

    def put_key(self, namespace: str, key: str, value: str) -> str | None:
        conn = self._conn()
        cur = conn.execute(
            "INSERT OR IGNORE INTO keys (namespace, key, value) VALUES (?,?,?)",
            (namespace, key, value),
        )
        if cur.rowcount:
            return None
        return self.get_key(namespace, key)

    def get_key(self, namespace: str, key: str) -> str | None:
        row = (
            self._conn()
            .execute("SELECT value FROM keys WHERE namespace=? AND key=?", (namespace, key))
            .fetchone()
        )
        return row[0] if row else None

    def count_keys(self, namespace: str) -> int:
        (n,) = (
            self._conn()
            .execute("SELECT COUNT(*) FROM keys WHERE namespace=?", (namespace,))
            .fetchone()
        )
        return int(n)

    def list_keys(self, namespace: str) -> builtins.list[tuple[str, str]]:
        rows = self._conn().execute(
            "SELECT key, value FROM keys WHERE namespace=? ORDER BY key", (namespace,)
        )
        return [(str(key), str(value)) for key, value in rows]

    def delete_key(self, namespace: str, key: str) -> None:
        self._conn().execute("DELETE FROM keys WHERE namespace=? AND key=?", (namespace, key))

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
