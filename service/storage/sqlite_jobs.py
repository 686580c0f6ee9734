"""Job store on SQLite: the embedded default. One file shared by the API and worker processes
(WAL mode, a connection per thread); writes run under `BEGIN IMMEDIATE`, so a mutator sees
and replaces the record with no other writer in between, and the lists' counts move with it.
Lists read a page through an index on real columns and their count from `counts` (SQLite's
COUNT(*) walks the index: 12 ms at 100,000 records against 0.1 ms for the page)."""

from __future__ import annotations

import builtins
import itertools
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from service.records import JobEvent, Record
from service.storage.base import (
    INDEXED_FIELDS,
    Mutator,
    Page,
    R,
    StoreUnavailable,
    decode,
    decode_event,
    encode,
    encode_event,
    indexed_fields,
    mutated,
    query_scope,
    record_scopes,
    scopes_of,
    translate_errors,
)

_SCHEMA_VERSION = 2
"""1: records with tenant and state columns, lists scanned. 2: a column per indexed field,
an index per list, and every list's count kept in `counts`."""

_TABLES = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, id TEXT NOT NULL, tenant TEXT NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS events (
    stream TEXT NOT NULL, seq INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (stream, seq));
CREATE TABLE IF NOT EXISTS keys (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (namespace, key));
CREATE TABLE IF NOT EXISTS counts (scope TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


def _index_statements() -> list[str]:
    """An index per list, as Redis keeps a sorted set per list (`scopes_of`): by kind, by
    state, and per tenant by each combination of state and the indexed fields, every one
    ending in the lists' order, so a page is a walk down one index, never a sort or a filter.
    Version 1's two indexes go."""
    statements = [
        "DROP INDEX IF EXISTS records_tenant",
        "DROP INDEX IF EXISTS records_state",
        "CREATE INDEX IF NOT EXISTS records_by_kind ON records (kind, created_at, id)",
        "CREATE INDEX IF NOT EXISTS records_by_state ON records (kind, state, created_at, id)",
    ]
    fields = ("state", *INDEXED_FIELDS)
    for n in range(len(fields) + 1):
        for names in itertools.combinations(fields, n):
            name = "_".join(("records_by_tenant", *names))
            columns = ", ".join(("kind", "tenant", *names, "created_at", "id"))
            statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON records ({columns})")
    return statements


_COLUMNS = ", ".join(INDEXED_FIELDS)


@translate_errors(sqlite3.OperationalError)
class SqliteJobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn().executescript(_TABLES)
        with self._transaction() as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
                _migrate(conn)

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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: no other writer in between, all or nothing."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                conn.execute("ROLLBACK")
            raise

    def ping(self) -> None:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    def create(self, record: Record) -> None:
        fields = indexed_fields(record)
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO records (kind, id, tenant, state, created_at, doc, {_COLUMNS}) "
                f"VALUES (?,?,?,?,?,?{',?' * len(INDEXED_FIELDS)})",
                (
                    record.KIND,
                    record.id,
                    record.tenant,
                    record.state,
                    record.created_at,
                    encode(record),
                    *(fields.get(name) for name in INDEXED_FIELDS),
                ),
            )
            _count(conn, record_scopes(record), +1)

    def get(self, model: type[R], id: str) -> R | None:
        row = (
            self._conn()
            .execute("SELECT doc FROM records WHERE kind=? AND id=?", (model.KIND, id))
            .fetchone()
        )
        return decode(model, row[0]) if row else None

    def update(self, model: type[R], id: str, mutate: Mutator[R]) -> R | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM records WHERE kind=? AND id=?", (model.KIND, id)
            ).fetchone()
            new = mutated(model, row[0], mutate) if row else None
            if row is None or new is None:
                return None
            fields = indexed_fields(new)
            conn.execute(
                "UPDATE records SET tenant=?, state=?, doc=?, "
                + ", ".join(f"{name}=?" for name in INDEXED_FIELDS)
                + " WHERE kind=? AND id=?",
                (
                    new.tenant,
                    new.state,
                    encode(new),
                    *(fields.get(name) for name in INDEXED_FIELDS),
                    model.KIND,
                    id,
                ),
            )
            before, after = record_scopes(decode(model, row[0])), record_scopes(new)
            _count(conn, before - after, -1)
            _count(conn, after - before, +1)
        return new

    def delete(self, model: type[Record], id: str) -> bool:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM records WHERE kind=? AND id=?", (model.KIND, id)
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM records WHERE kind=? AND id=?", (model.KIND, id))
            _count(conn, record_scopes(decode(model, row[0])), -1)
        return True

    def list(
        self,
        model: type[R],
        *,
        tenant: str | None = None,
        state: str | None = None,
        where: Mapping[str, str] | None = None,
        match: Callable[[R], bool] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> Page[R]:
        scope = query_scope(model, tenant, state, where)
        filters = {"kind": model.KIND, "state": state, "tenant": tenant, **(where or {})}
        conditions = {name: value for name, value in filters.items() if value is not None}
        sql = (
            "SELECT doc FROM records WHERE "
            + " AND ".join(f"{name}=?" for name in conditions)
            + " ORDER BY created_at DESC, id DESC"
        )
        conn = self._conn()
        if match is not None:
            every = conn.execute(sql, builtins.list(conditions.values()))
            matching = [r for r in (decode(model, row[0]) for row in every) if match(r)]
            end = None if limit is None else offset + limit
            return Page(items=matching[offset:end], count=len(matching))
        conn.execute("BEGIN")  # the count and the page of one snapshot
        try:
            counted = conn.execute("SELECT n FROM counts WHERE scope=?", (scope,)).fetchone()
            rows = [] if limit == 0 else conn.execute(
                sql + " LIMIT ? OFFSET ?",
                [*conditions.values(), -1 if limit is None else limit, offset],
            ).fetchall()  # fmt: skip
        finally:
            conn.execute("COMMIT")
        return Page(
            items=[decode(model, row[0]) for row in rows], count=counted[0] if counted else 0
        )

    def append_event(self, stream: str, event: JobEvent) -> int:
        with self._transaction() as conn:
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE stream=?", (stream,)
            ).fetchone()
            conn.execute(
                "INSERT INTO events (stream, seq, doc) VALUES (?,?,?)",
                (stream, last + 1, encode_event(event)),
            )
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


def _count(conn: sqlite3.Connection, scopes: set[str], delta: int) -> None:
    for scope in scopes:
        conn.execute(
            "INSERT INTO counts (scope, n) VALUES (?, ?) "
            "ON CONFLICT (scope) DO UPDATE SET n = n + excluded.n",
            (scope, delta),
        )
    if delta < 0:
        conn.executemany(
            "DELETE FROM counts WHERE scope=? AND n <= 0", [(scope,) for scope in scopes]
        )


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a data folder of any earlier version to this one, in the caller's transaction:
    the indexed fields become columns (filled from the stored JSON), every list gets its index
    and every count is computed once, by groups rather than by record."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
    for name in INDEXED_FIELDS:
        if name not in present:
            conn.execute(f"ALTER TABLE records ADD COLUMN {name} TEXT")
            conn.execute(f"UPDATE records SET {name} = json_extract(doc, '$.{name}')")
    for statement in _index_statements():
        conn.execute(statement)
    counts: Counter[str] = Counter()
    groups = conn.execute(
        f"SELECT kind, tenant, state, {_COLUMNS}, COUNT(*) FROM records "
        f"GROUP BY kind, tenant, state, {_COLUMNS}"
    )
    for kind, tenant, state, *values, n in groups:
        fields = {"state": state} | {
            name: value
            for name, value in zip(INDEXED_FIELDS, values, strict=True)
            if value is not None
        }
        for scope in scopes_of(kind, tenant, fields):
            counts[scope] += n
    conn.execute("DELETE FROM counts")
    conn.executemany("INSERT INTO counts (scope, n) VALUES (?, ?)", counts.items())
    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
