"""The two storage protocols.

Records are JSON documents of a `kind` ("classifier", "dataset", "job"), each with an `id`, a
`tenant`, a `state` and a `created_at`; the stores index those four and nothing else, so any
other filter is applied by the caller. Updates go through a mutator under a transaction, which
is how leases and state machines stay race-free across processes without locks of their own.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

Doc = dict[str, Any]
Mutator = Callable[[Doc], Doc | None]
"""Gets a copy of the record; returns the new record, or None to leave it unchanged. It may be
called more than once (optimistic retries), so it must not have side effects."""

Match = Callable[[Doc], bool]


class StoreUnavailable(RuntimeError):
    """The job store or blob store cannot be reached."""


class ArtifactNotFound(KeyError):
    """No blob under that key."""


@dataclass(frozen=True)
class Page:
    items: list[Doc]
    count: int


class JobStore(Protocol):
    def ping(self) -> None: ...

    def create(self, kind: str, doc: Doc) -> None:
        """Insert a new record; `doc` carries id, tenant, state and created_at."""

    def get(self, kind: str, id: str) -> Doc | None: ...

    def update(self, kind: str, id: str, mutate: Mutator) -> Doc | None:
        """Atomically replace a record by `mutate(record)`; None if missing or unchanged."""

    def delete(self, kind: str, id: str) -> bool: ...

    def list(
        self,
        kind: str,
        *,
        tenant: str | None = None,
        state: str | None = None,
        match: Match | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> Page:
        """Records newest first; `count` is the number matching before offset and limit."""

    def append_event(self, stream: str, event: Doc) -> int:
        """Append to an event stream; returns its sequence number (1, 2, …)."""

    def read_events(
        self, stream: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, Doc]]: ...

    def delete_events(self, stream: str) -> None: ...

    def put_key(self, namespace: str, key: str, value: str) -> str | None:
        """Set `key` unless it exists; returns the existing value, or None when it was set."""

    def get_key(self, namespace: str, key: str) -> str | None: ...

    def count_keys(self, namespace: str) -> int: ...

    def delete_key(self, namespace: str, key: str) -> None: ...

    def close(self) -> None: ...


class ArtifactStore(Protocol):
    def ping(self) -> None: ...

    def put(self, key: str, data: bytes) -> None:
        """Write a blob atomically: readers see the old blob or the whole new one."""

    def put_stream(self, key: str, chunks: Iterator[bytes]) -> int:
        """Write a blob from chunks atomically; returns its size."""

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under `prefix`; returns how many."""


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
