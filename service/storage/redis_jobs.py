"""Job store on Redis: the production form. A record is a JSON string; a sorted set per list
it belongs to (`record_scopes`: by tenant, state, classifier, method) indexes it by creation
time, so a page is a ZREVRANGE and its count a ZCARD, whatever the number of records. Writes
are optimistic transactions (WATCH/MULTI), retried when another writer got there first.
Persistence is Redis's own (run it with AOF)."""

from __future__ import annotations

import builtins
import itertools
import json
from collections.abc import Callable, Iterator, Mapping

import redis
from redis.exceptions import RedisError, WatchError

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
    mutated,
    query_scope,
    record_scopes,
    scopes_of,
    translate_errors,
)

_BATCH = 200
_SCHEMA_VERSION = 2
"""1: sorted sets by tenant, by state and of all, lists filtered by reading records. 2: a
sorted set per indexed list (`service.storage.base.record_scopes`)."""


@translate_errors(RedisError)
class RedisJobStore:
    def __init__(self, url: str, prefix: str = "c3:") -> None:
        self._r = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, decode_responses=True
        )
        self._p = prefix
        self._checked_schema = False  # no I/O here: a store is built before Redis may be up

    def _rec(self, kind: str, id: str) -> str:
        return f"{self._p}rec:{kind}:{id}"

    def _index(self, scope: str) -> str:
        """The sorted set of a list. Every use of an index goes through here, so the first
        one brings an earlier layout up to date."""
        if not self._checked_schema:
            if self._r.get(f"{self._p}schema") != str(_SCHEMA_VERSION):
                self._migrate()
            self._checked_schema = True
        return self._sorted_set(scope)

    def _sorted_set(self, scope: str) -> str:
        return f"{self._p}idx:{scope}"

    def ping(self) -> None:
        try:
            self._r.ping()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def create(self, record: Record) -> None:
        key = self._rec(record.KIND, record.id)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.exists(key):
                        raise KeyError(f"{record.KIND} {record.id} exists")
                    pipe.multi()
                    pipe.set(key, encode(record))
                    for scope in record_scopes(record):
                        pipe.zadd(self._index(scope), {record.id: record.created_at})
                    pipe.execute()
                    return
                except WatchError:
                    continue

    def get(self, model: type[R], id: str) -> R | None:
        raw = self._r.get(self._rec(model.KIND, id))
        return decode(model, raw) if raw else None

    def update(self, model: type[R], id: str, mutate: Mutator[R]) -> R | None:
        key = self._rec(model.KIND, id)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw: str | None = pipe.get(key)  # type: ignore[assignment]
                    new = mutated(model, raw, mutate) if raw else None
                    if raw is None or new is None:
                        pipe.unwatch()
                        return None
                    before, after = record_scopes(decode(model, raw)), record_scopes(new)
                    pipe.multi()
                    pipe.set(key, encode(new))
                    for scope in before - after:
                        pipe.zrem(self._index(scope), id)
                    for scope in after - before:
                        pipe.zadd(self._index(scope), {id: new.created_at})
                    pipe.execute()
                    return new
                except WatchError:
                    continue

    def delete(self, model: type[Record], id: str) -> bool:
        key = self._rec(model.KIND, id)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw: str | None = pipe.get(key)  # type: ignore[assignment]
                    if raw is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.delete(key)
                    for scope in record_scopes(decode(model, raw)):
                        pipe.zrem(self._index(scope), id)
                    pipe.execute()
                    return True
                except WatchError:
                    continue

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
        index = self._index(query_scope(model, tenant, state, where))
        if match is None:
            if limit == 0:
                return Page(items=[], count=int(self._r.zcard(index)))
            last = -1 if limit is None else offset + limit - 1
            pipe = self._r.pipeline()  # MULTI: the count and the page of one moment
            pipe.zcard(index)
            pipe.zrevrange(index, offset, last)
            count, ids = pipe.execute()
            return Page(items=self._records(model, ids), count=int(count))
        every: builtins.list[str] = self._r.zrevrange(index, 0, -1)  # type: ignore[assignment]
        matching = [r for r in self._records(model, every) if match(r)]
        end = None if limit is None else offset + limit
        return Page(items=matching[offset:end], count=len(matching))

    def _records(self, model: type[R], ids: builtins.list[str]) -> builtins.list[R]:
        """The records of `ids`, in order, read `_BATCH` at a time; one deleted meanwhile is
        left out."""
        found = []
        for start in range(0, len(ids), _BATCH):
            keys = [self._rec(model.KIND, id) for id in ids[start : start + _BATCH]]
            found += [decode(model, raw) for raw in self._r.mget(keys) if raw is not None]
        return found

    def _migrate(self) -> None:
        """Index the records of an earlier version (idempotent: several processes starting at
        once may all run it), then drop the sorted sets version 1 kept."""
        for batch in _batched(self._r.scan_iter(f"{self._p}rec:*", count=_BATCH)):
            pipe = self._r.pipeline(transaction=False)
            for key, raw in zip(batch, self._r.mget(batch), strict=True):
                if raw is None:
                    continue
                doc = json.loads(raw)
                kind = key[len(f"{self._p}rec:") :].split(":", 1)[0]
                fields = {"state": doc["state"]} | {
                    name: str(doc[name]) for name in INDEXED_FIELDS if doc.get(name) is not None
                }
                for scope in scopes_of(kind, doc["tenant"], fields):
                    pipe.zadd(self._sorted_set(scope), {doc["id"]: doc["created_at"]})
            pipe.execute()
        for old in ("tenant", "state", "all"):
            for batch in _batched(self._r.scan_iter(f"{self._p}{old}:*", count=_BATCH)):
                self._r.delete(*batch)
        self._r.set(f"{self._p}schema", str(_SCHEMA_VERSION))

    def append_event(self, stream: str, event: JobEvent) -> int:
        return int(self._r.rpush(f"{self._p}events:{stream}", encode_event(event)))

    def read_events(
        self, stream: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, JobEvent]]:
        raws = self._r.lrange(f"{self._p}events:{stream}", after, after + limit - 1)
        return [(after + i + 1, decode_event(raw)) for i, raw in enumerate(raws)]

    def delete_events(self, stream: str) -> None:
        self._r.delete(f"{self._p}events:{stream}")

    def put_key(self, namespace: str, key: str, value: str) -> str | None:
        name = f"{self._p}keys:{namespace}"
        if self._r.hsetnx(name, key, value):
            return None
        return self.get_key(namespace, key)

    def get_key(self, namespace: str, key: str) -> str | None:
        raw = self._r.hget(f"{self._p}keys:{namespace}", key)
        return str(raw) if raw is not None else None

    def count_keys(self, namespace: str) -> int:
        return int(self._r.hlen(f"{self._p}keys:{namespace}"))

    def list_keys(self, namespace: str) -> builtins.list[tuple[str, str]]:
        pairs = self._r.hgetall(f"{self._p}keys:{namespace}")
        return sorted((str(key), str(value)) for key, value in pairs.items())

    def delete_key(self, namespace: str, key: str) -> None:
        self._r.hdel(f"{self._p}keys:{namespace}", key)

    def close(self) -> None:
        self._r.close()


def _batched(keys: Iterator[str]) -> Iterator[builtins.list[str]]:
    while batch := builtins.list(itertools.islice(keys, _BATCH)):
        yield batch
