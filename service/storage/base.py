"""The two storage protocols, and what both job stores share.

Records are the typed models of `service.records`, one kind each. Lists are indexed: a list is
named by its *scope* (kind, tenant, state and the `INDEXED_FIELDS`), each store keeps every
scope's members in creation order and its count, and a page of a scope costs the same at 100
records as at 100,000. Filters no index covers go through `match`, which reads the scope
whole. A store validates a record on every write and every read (`encode` / `decode`), and
updates go through a mutator under a transaction that may not move the record along an edge
its state machine lacks (`check_transition`): that is how leases and states stay race-free
across processes without locks of their own.
"""

from __future__ import annotations

import builtins
import errno
import functools
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, Protocol, TypeVar
from urllib.parse import quote

from service.records import JobEvent, JobEvents, Record, check_transition

R = TypeVar("R", bound=Record)
Mutator = Callable[[R], R | None]
"""Gets a fresh copy of the record; returns the new record (the same object, changed, is
fine), or None to leave it unchanged. It may be called more than once (optimistic retries), so
it must not have side effects."""


class StoreUnavailable(RuntimeError):
    """The job store or blob store cannot be reached."""


class ArtifactNotFound(KeyError):
    """No blob under that key."""


def is_disk_full(exc: BaseException) -> bool:
    """A write failed for want of space (on a blob, or in SQLite's file)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "database or disk is full" in str(exc)


def checked_key(key: str) -> str:
    """A blob key both artifact stores accept: relative, `/`-separated, no empty, `.` or `..`
    part (so it names the same blob in a folder and in a bucket)."""
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"bad artifact key {key!r}")
    return key


@dataclass(frozen=True)
class Page(Generic[R]):
    items: list[R]
    count: int


INDEXED_FIELDS = ("classifier_id", "method")
"""Record fields, besides tenant and state, that lists filter on through an index (`where`).
A kind without the field is simply never in such a list."""


class UnindexedList(ValueError):
    """A list asked for filters no index covers (a programming error, not a user's)."""


def list_scope(kind: str, tenant: str | None, filters: Mapping[str, str]) -> str:
    """The name of one indexed list: `job|tenant=a|state=queued`. Filters other than state
    are indexed per tenant only."""
    unknown = set(filters) - {"state", *INDEXED_FIELDS}
    if unknown or (tenant is None and set(filters) - {"state"}):
        raise UnindexedList(f"no index lists {kind} by {sorted(filters)} (tenant {tenant!r})")
    parts = [kind] if tenant is None else [kind, f"tenant={quote(tenant, safe='')}"]
    parts += [f"{name}={quote(str(value), safe='')}" for name, value in sorted(filters.items())]
    return "|".join(parts)


def scopes_of(kind: str, tenant: str, fields: Mapping[str, str]) -> set[str]:
    """Every list a record with these indexed `fields` (state included) belongs to: all of
    its kind, by state, and per tenant by each combination of fields (2 + 2^len(fields))."""
    found = {list_scope(kind, None, {}), list_scope(kind, None, {"state": fields["state"]})}
    for n in range(len(fields) + 1):
        for names in itertools.combinations(sorted(fields), n):
            found.add(list_scope(kind, tenant, {name: fields[name] for name in names}))
    return found


def indexed_fields(record: Record) -> dict[str, str]:
    fields = {"state": str(record.state)}
    for name in INDEXED_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = str(value)
    return fields


def record_scopes(record: Record) -> set[str]:
    return scopes_of(record.KIND, record.tenant, indexed_fields(record))


def query_scope(
    model: type[Record], tenant: str | None, state: str | None, where: Mapping[str, str] | None
) -> str:
    filters = dict(where or {}) | ({} if state is None else {"state": str(state)})
    return list_scope(model.KIND, tenant, filters)


def encode(record: Record) -> str:
    return record.model_dump_json()


def decode(model: type[R], raw: str | bytes) -> R:
    return model.model_validate_json(raw)


def mutated(model: type[R], raw: str | bytes, mutate: Mutator[R]) -> R | None:
    """`mutate` applied to a fresh copy of the stored record, checked against its state
    machines and validated; None when the mutator declines."""
    before = decode(model, raw)
    after = mutate(decode(model, raw))
    if after is None:
        return None
    after = model.model_validate(after.model_dump())  # a mutator's changes are validated too
    check_transition(before, after)
    return after


def encode_event(event: JobEvent) -> str:
    return event.model_dump_json(exclude_none=True)


def decode_event(raw: str | bytes) -> JobEvent:
    return JobEvents.validate_json(raw)


class JobStore(Protocol):
    def ping(self) -> None: ...

    def create(self, record: Record) -> None:
        """Insert a new record (a record with its id already stored is refused)."""

    def get(self, model: type[R], id: str) -> R | None: ...

    def update(self, model: type[R], id: str, mutate: Mutator[R]) -> R | None:
        """Atomically replace a record by `mutate(record)`; None if missing or unchanged."""

    def delete(self, model: type[Record], id: str) -> bool: ...

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
        """Records newest first (then by id, descending); `count` is the number matching
        before offset and limit. `state` and `where` (`INDEXED_FIELDS`, with a tenant) are
        indexed: a page costs the same however many records there are. `match` is not: it
        reads every record of the indexed list."""

    def append_event(self, stream: str, event: JobEvent) -> int:
        """Append to an event stream; returns its sequence number (1, 2, …)."""

    def read_events(
        self, stream: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, JobEvent]]: ...

    def delete_events(self, stream: str) -> None: ...

    def put_key(self, namespace: str, key: str, value: str) -> str | None:
        """Set `key` unless it exists; returns the existing value, or None when it was set."""

    def get_key(self, namespace: str, key: str) -> str | None: ...

    def count_keys(self, namespace: str) -> int: ...

    def list_keys(self, namespace: str) -> builtins.list[tuple[str, str]]:
        """Every (key, value) of a namespace, by key."""

    def delete_key(self, namespace: str, key: str) -> None: ...

    def close(self) -> None: ...


class ArtifactStore(Protocol):
    def ping(self) -> None: ...

    def put(self, key: str, data: bytes) -> None:
        """Write a blob atomically: readers see the old blob or the whole new one."""

    def put_stream(self, key: str, chunks: Iterator[bytes]) -> int:
        """Write a blob from chunks atomically; returns its size."""

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO:
        """The blob as a seekable binary file (the caller closes it)."""

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes from `start` (fewer at the end): a page of a large blob without
        reading the rest."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under `prefix`; returns how many."""

    def modified_at(self, key: str) -> float:
        """When the blob was last written (Unix time)."""

    def sweep_partials(self, older_than: float) -> int:
        """Remove what interrupted writes left behind (Unix time `older_than`); how many."""

    def free_bytes(self) -> int | None:
        """Space left for blobs (None: the store does not run out, e.g. S3)."""

    def presigned_url(
        self, key: str, seconds: int, media_type: str, filename: str | None
    ) -> str | None:
        """A URL that serves the blob for `seconds` without the API (None: the store has
        none, e.g. a local folder)."""


def translate_errors(*driver_errors: type[BaseException]) -> Callable[[type], type]:
    """Class decorator: a driver's connection errors surface as `StoreUnavailable`, so callers
    (the API's error mapping, the workers' retry logic) never need to know the driver."""

    def wrap_method(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except driver_errors as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

        return wrapper

    def decorate(cls: type) -> type:
        for name, member in list(vars(cls).items()):
            if callable(member) and not name.startswith("_"):
                setattr(cls, name, wrap_method(member))
        return cls

    return decorate
