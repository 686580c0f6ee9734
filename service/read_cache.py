"""The API's one cache: what it derives from a succeeded job's files (its sample table, where its
pixels lie, report figures, PNG strips), which never change once the job has succeeded.

Bounded by bytes, not entries: one 100,000-sample job's table is megabytes while a strip is a
few kilobytes, so the least recently used entries go once the total passes the budget
(`C3_READ_CACHE_MB`). An entry larger than the whole budget is built and not kept.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from service.records import JobRecord, JobState

T = TypeVar("T")

DEFAULT_BUDGET = 64 * 2**20
UNKNOWN_SIZE = 64 * 1024
"""What an entry of no measurable size (a small model, a dict) is assumed to take."""


@runtime_checkable
class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


def footprint(value: Any) -> int:
    """About how many bytes `value` holds."""
    if isinstance(value, bytes | str):
        return sys.getsizeof(value)
    if isinstance(value, np.ndarray | Sized):
        return int(value.nbytes)
    return UNKNOWN_SIZE


class ReadCache:
    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
        self._lock = Lock()

    def get(self, job: JobRecord, name: str, build: Callable[[], T]) -> T:
        """`build()` once per succeeded job and `name`; an unfinished job's figures are built
        every time (its files may still change)."""
        if job.state != JobState.SUCCEEDED:
            return build()
        key = (job.id, name)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                value: T = self._entries[key][0]
                return value
        value = build()
        self._keep(key, value, footprint(value))
        return value

    def _keep(self, key: tuple[str, str], value: Any, size: int) -> None:
        if size > self.budget:
            return
        with self._lock:
            if key in self._entries:
                self.used -= self._entries.pop(key)[1]
            self._entries[key] = (value, size)
            self.used += size
            while self.used > self.budget:
                self.used -= self._entries.popitem(last=False)[1][1]

    def forget(self, job_id: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == job_id]:
                self.used -= self._entries.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.used = 0


cache = ReadCache()
"""The process's cache; `service.app` sizes it from the settings."""
