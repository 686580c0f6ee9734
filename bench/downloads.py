"""Benchmark of a large job's reads over real HTTP: downloads and sample pages, and what they
cost the API process in memory.

    .venv/bin/python bench/downloads.py                       # 100,000 samples (10 × 10,000)
    .venv/bin/python bench/downloads.py --per-class 1000 --baseline ../c3-old

Makes one finished c3 job the way the worker leaves it (bench/finished_jobs.py), starts
`c3 api` on it (uvicorn, embedded default) and, from a client in this process, downloads each
export twice (the first and a repeat download, streamed to nowhere), asks again with the
ETag (304), walks the sample list a page at a time by its `next` links, and prints the times
and the API's resident memory before, after and at its peak (VmHWM). With `--baseline DIR`
(a checkout of an earlier version) the same requests go to that version's API on the same
data, and the table gets a ratio column.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.finished_jobs import seed_jobs  # noqa: E402
from bench.machine import describe, rss_mb  # noqa: E402

EXPORTS = ("samples.zip", "samples.npz", "dataset", "metrics.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(code: Path, data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("C3_")}
    env |= {"C3_DATA_DIR": data_dir, "PYTHONPATH": str(code)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--port", str(port)],
        cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return proc, url
        except httpx.ConnectError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"c3 api from {code} did not start")


def download(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> tuple[float, int, str]:
    """Seconds, bytes and ETag of one download, streamed and discarded."""
    start, size = time.perf_counter(), 0
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code not in (200, 304):
            raise SystemExit(f"{url}: {response.status_code} {response.read()[:300]!r}")
        for chunk in response.iter_bytes():
            size += len(chunk)
    return time.perf_counter() - start, size, response.headers.get("etag", "")


def measure(code: Path, data_dir: str, job: str) -> dict[str, float]:
    """Every figure of one API version on the job."""
    proc, url = start_api(code, data_dir)
    figures: dict[str, float] = {}
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            t0 = time.perf_counter()
            client.get(f"/inversions/{job}/samples", params={"limit": 100}).raise_for_status()
            figures["first samples page, cold (ms)"] = (time.perf_counter() - t0) * 1000
            pages = []
            for offset in range(0, 20_000, 100):  # what both versions answer
                t0 = time.perf_counter()
                client.get(f"/inversions/{job}/samples?offset={offset}&limit=100")
                pages.append((time.perf_counter() - t0) * 1000)
            figures["samples page p95, 200 pages (ms)"] = sorted(pages)[int(0.95 * len(pages))]
            figures["samples page median (ms)"] = statistics.median(pages)
            figures["API memory before downloads (MB)"] = rss_mb(proc.pid)[0]
            for name in EXPORTS:
                first, size, etag = download(client, f"/inversions/{job}/{name}")
                repeat, _, _ = download(client, f"/inversions/{job}/{name}")
                figures[f"{name}: first download (ms)"] = first * 1000
                figures[f"{name}: repeat download (ms)"] = repeat * 1000
                figures[f"{name}: size (MB)"] = size / 2**20
                if etag:
                    cached, _, _ = download(
                        client, f"/inversions/{job}/{name}", {"If-None-Match": etag}
                    )
                    figures[f"{name}: 304 with the ETag (ms)"] = cached * 1000
            current, peak = rss_mb(proc.pid)
            figures["API memory after downloads (MB)"] = current
            figures["API memory peak (MB)"] = peak
            figures["API memory growth, peak − before (MB)"] = (
                peak - figures["API memory before downloads (MB)"]
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=10_000)
    parser.add_argument("--side", type=int, default=28, help="image side (1×side×side)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (seeding)")
    parser.add_argument("--baseline", type=Path, help="a checkout of the version to compare")
    args = parser.parse_args()
    print(describe("bench/downloads.py", args.threads))
    with tempfile.TemporaryDirectory(prefix="c3-bench-downloads-") as data_dir:
        os.environ["C3_DATA_DIR"] = data_dir
        start = time.perf_counter()
        (job,) = seed_jobs(args.per_class, args.side, 300, args.threads, seeds=(0,))
        print(
            f"made a c3 job of {10 * args.per_class:,} samples (10 classes × {args.per_class:,}, "
            f"1×{args.side}×{args.side}) with the engine in {time.perf_counter() - start:.0f} s"
        )
        now = measure(ROOT, data_dir, job)
        before = measure(args.baseline.resolve(), data_dir, job) if args.baseline else None
    print(
        f"\n{'figure':<42} {'this version':>13}"
        + (f" {'baseline':>10} {'ratio':>7}" if before else "")
    )
    for name, value in now.items():
        line = f"{name:<42} {value:>13.2f}"
        if before is not None and name in before:
            ratio = before[name] / value if value else float("nan")
            line += f" {before[name]:>10.2f} {ratio:>6.1f}×"
        print(line)
    growth = now["API memory growth, peak − before (MB)"]
    verdict = "met" if growth <= 50 else "NOT met"
    print(f"\nbar: API memory growth ≤ 50 MB: {verdict} ({growth:.0f} MB)")
    return 0 if growth <= 50 else 1


if __name__ == "__main__":
    sys.exit(main())
