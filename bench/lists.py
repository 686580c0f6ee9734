"""Benchmark of list pages in both job stores at 100 and at 100,000 records: a page should cost
the same at both (issue 14, part 3).

    .venv/bin/python bench/lists.py                          # SQLite and Redis, 100 and 100,000
    .venv/bin/python bench/lists.py --sizes 100 10000 --stores sqlite

Fills a fresh store (SQLite in a temporary folder; Redis under the key prefix
`c3-bench-lists:`, emptied afterwards) with one tenant's jobs, spread over 10 classifiers,
3 methods and the job states, then times the first page (50 records, with its count) of the
lists the API serves: all of the tenant's jobs, by state, by classifier, by classifier and
method. Prints p50 and p95 of `--repeats` reads each, and of a page at offset 1,000 (an
offset page costs more the deeper it is, in both stores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before bench/, whose service.py would shadow the package

from bench.machine import describe  # noqa: E402
from service.records import JobParams, JobRecord, JobState  # noqa: E402
from service.settings import CommonSettings  # noqa: E402
from service.storage import JobStore, open_stores  # noqa: E402

TENANT = "bench"
CLASSIFIERS = [f"clf_bench{i}" for i in range(10)]
METHODS = ["c3", "soft", "pixel"]
STATES = [JobState.SUCCEEDED] * 6 + [JobState.FAILED, JobState.CANCELLED, JobState.QUEUED]
PAGE = 50
LISTS: dict[str, dict[str, Any]] = {
    "tenant": {},
    "tenant+state": {"state": JobState.SUCCEEDED},
    "tenant+classifier": {"where": {"classifier_id": CLASSIFIERS[3]}},
    "tenant+classifier+method": {"where": {"classifier_id": CLASSIFIERS[3], "method": "soft"}},
}


def job(i: int) -> JobRecord:
    return JobRecord(
        id=f"job_bench{i:07d}", tenant=TENANT, created_at=1.7e9 + i,
        state=STATES[i % len(STATES)], classifier_id=CLASSIFIERS[i % len(CLASSIFIERS)],
        method=METHODS[i % len(METHODS)],  # type: ignore[arg-type]
        params=JobParams(classes=list(range(10)), samples_per_class=100, steps=300, seed=i),
        class_names=[f"class {c}" for c in range(10)], input_shape=(1, 28, 28),
    )  # fmt: skip


@contextmanager
def fresh_store(kind: str, redis_url: str, size: int) -> Iterator[JobStore]:
    """An empty store; the records are deleted afterwards (Redis: through the store, which
    drops emptied sorted sets; only its one-line schema mark stays)."""
    with tempfile.TemporaryDirectory(prefix="c3-bench-lists-") as folder:
        settings = CommonSettings(data_dir=Path(folder))
        if kind == "redis":
            settings = CommonSettings(redis_url=redis_url, redis_prefix="c3-bench-lists:")
        stores = open_stores(settings)
        if stores.jobs.list(JobRecord, limit=0).count:
            sys.exit(f"{redis_url} holds records under c3-bench-lists: (an interrupted run?)")
        try:
            yield stores.jobs
        finally:
            start = time.perf_counter()
            for i in range(size):
                stores.jobs.delete(JobRecord, job(i).id)
            print(f"  (deleted in {time.perf_counter() - start:.1f} s)")
            stores.close()


def timed(read: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    read()  # warm: connection, page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        times.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(times, n=20)
    return statistics.median(times), cuts[18]


def run(kind: str, size: int, repeats: int, redis_url: str) -> None:
    with fresh_store(kind, redis_url, size) as store:
        start = time.perf_counter()
        for i in range(size):
            store.create(job(i))
        filled = time.perf_counter() - start
        print(f"{kind:6} {size:>7,} records (filled in {filled:.1f} s, {size / filled:,.0f}/s)")
        for name, query in LISTS.items():
            page = store.list(JobRecord, tenant=TENANT, limit=PAGE, **query)
            p50, p95 = timed(
                lambda q=query: store.list(JobRecord, tenant=TENANT, limit=PAGE, **q), repeats
            )
            print(
                f"  {name:26} count {page.count:>7,}  page of {len(page.items):>2}: "
                f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms"
            )
        if size > 1000:
            p50, p95 = timed(
                lambda: store.list(JobRecord, tenant=TENANT, offset=1000, limit=PAGE), repeats
            )
            print(f"  {'tenant, offset 1,000':26} {'':>22}: p50 {p50:6.2f} ms  p95 {p95:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 100_000])
    parser.add_argument(
        "--stores", nargs="+", choices=["sqlite", "redis"], default=["sqlite", "redis"]
    )
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    print(describe("bench/lists.py", 1) + f"; one thread reading, {args.repeats} reads per list")
    for kind in args.stores:
        for size in args.sizes:
            run(kind, size, args.repeats, args.redis_url)
    load = os.getloadavg()
    print(f"# load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at end")


if __name__ == "__main__":
    main()
