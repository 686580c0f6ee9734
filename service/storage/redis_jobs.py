"""Job store on Redis: the production form. A record is a JSON string; sorted sets index it by
tenant and by state (newest first). Updates are optimistic transactions (WATCH/MULTI), retried
when another writer got there first. Persistence is Redis's own (run it with AOF)."""

from __future__ import annotations

import builtins
from collections.abc import Callable

import redis
from redis.exceptions import RedisError, WatchError

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

_BATCH = 200


@translate_errors(RedisError)
class RedisJobStore:
    def __init__(self, url: str, prefix: str = "c3:") -> None:
        self._r = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, decode_responses=True
        )
        self._p = prefix

    def _rec(self, kind: str, id: str) -> str:
        return f"{self._p}rec:{kind}:{id}"

    def _by_tenant(self, kind: str, tenant: str) -> str:
        return f"{self._p}tenant:{kind}:{tenant}"

    def _by_state(self, kind: str, state: str) -> str:
        return f"{self._p}state:{kind}:{state}"

    def _all(self, kind: str) -> str:
        return f"{self._p}all:{kind}"

    def ping(self) -> None:
        try:
            self._r.ping()
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def create(self, record: Record) -> None:
        kind, id, score = record.KIND, record.id, record.created_at
        pipe = self._r.pipeline()
        pipe.set(self._rec(kind, id), encode(record), nx=True)
        pipe.zadd(self._all(kind), {id: score})
        pipe.zadd(self._by_tenant(kind, record.tenant), {id: score})
        pipe.zadd(self._by_state(kind, record.state), {id: score})
        created, *_ = pipe.execute()
        if not created:
            raise KeyError(f"{kind} {id} exists")

    def get(self, model: type[R], id: str) -> R | None:
        raw = self._r.get(self._rec(model.KIND, id))
        return decode(model, raw) if raw else None

    def update(self, model: type[R], id: str, mutate: Mutator[R]) -> R | None:
        kind = model.KIND
        key = self._rec(kind, id)
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw: str | None = pipe.get(key)  # type: ignore[assignment]
                    new = mutated(model, raw, mutate) if raw else None
                    if raw is None or new is None:
                        pipe.unwatch()
                        return None
                    old_state = decode(model, raw).state
                    pipe.multi()
                    pipe.set(key, encode(new))
                    if new.state != old_state:
                        pipe.zrem(self._by_state(kind, old_state), id)
                        pipe.zadd(self._by_state(kind, new.state), {id: new.created_at})
                    pipe.execute()
                    return new
                except WatchError:
                    continue

    def delete(self, model: type[Record], id: str) -> bool:
        record = self.get(model, id)
        if record is None:
            return False
        kind = model.KIND
        pipe = self._r.pipeline()
        pipe.delete(self._rec(kind, id))
        pipe.zrem(self._all(kind), id)
        pipe.zrem(self._by_tenant(kind, record.tenant), id)
        pipe.zrem(self._by_state(kind, record.state), id)
        pipe.execute()
        return True

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
        kind = model.KIND
        if state is not None:
            index = self._by_state(kind, state)
        elif tenant is not None:
            index = self._by_tenant(kind, tenant)
        else:
            index = self._all(kind)
        ids = [str(i) for i in self._r.zrevrange(index, 0, -1)]
        matching: list[R] = []
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            for raw in self._r.mget([self._rec(kind, i) for i in chunk]):
                if raw is None:
                    continue
                record = decode(model, raw)
                if tenant is not None and record.tenant != tenant:
                    continue
                if state is not None and record.state != state:
                    continue
                if match is None or match(record):
                    matching.append(record)
        end = None if limit is None else offset + limit
        return Page(items=matching[offset:end], count=len(matching))

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
