"""Shared fixtures: real Redis, real Celery worker processes, the real app over ASGI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

REDIS_DB = int(os.environ.get("C3_TEST_REDIS_DB", "13"))
"""The database number the tests own on a shared Redis; flushed before and after."""


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server with AOF persistence, for restart tests."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (the test command installs it)")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers(self.url):
            if time.monotonic() > deadline:
                pytest.fail("throwaway redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when it answers, else a throwaway one."""
    shared = "redis://127.0.0.1:6379"
    if _answers(shared):
        yield shared
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield f"redis://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A Redis database of the tests' own, empty before and flushed after."""
    url = f"{redis_base_url}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 in server mode, as a process of its own: a real S3-compatible HTTP server
    that workers and the API reach as they would MinIO."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url)
            break
        except httpx.ConnectError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def s3_settings(s3_endpoint: str) -> Iterator[dict[str, str]]:
    """The settings of an S3 blob store on a fresh bucket of its own, removed afterwards."""
    from service.storage.s3_blobs import s3_client

    bucket = f"c3-test-{free_port()}-{os.getpid()}"
    client = s3_client(s3_endpoint, "us-east-1", "test", "test")
    client.create_bucket(Bucket=bucket)
    yield {
        "C3_S3_BUCKET": bucket,
        "C3_S3_ENDPOINT_URL": s3_endpoint,
        "C3_S3_ACCESS_KEY_ID": "test",
        "C3_S3_SECRET_ACCESS_KEY": "test",
    }
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def c3_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of the embedded default in a fresh data folder, fast lease timings."""
    env = {
        "C3_DATA_DIR": str(tmp_path / "data"),
        "C3_HEARTBEAT_SECONDS": "0.5",
        "C3_STALE_AFTER_SECONDS": "3",
        "C3_REAPER_SECONDS": "1",
    }
    for key in [k for k in os.environ if k.startswith("C3_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from service.settings import get_settings
    from worker.settings import get_worker_settings

    get_settings.cache_clear()
    get_worker_settings.cache_clear()
    return env


class WorkerProcess:
    """A real `c3 worker` process (Celery, prefork pool)."""

    def __init__(
        self, env: dict[str, str], log: Path, queues: str = "gpu,validate", concurrency: int = 1
    ) -> None:
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "worker",
                f"--queues={queues}",
                f"--concurrency={concurrency}",
                f"--name=test-{free_port()}@%h",
            ],
            env={**os.environ, **env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while b" ready." not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()  # never left behind by a test that fails here
                pytest.fail(f"worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a crashed machine)."""
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log_file.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    """Start real worker processes; all are stopped at the end of the test."""
    workers: list[WorkerProcess] = []

    def start(env: dict[str, str], queues: str = "gpu,validate") -> WorkerProcess:
        w = WorkerProcess(env, tmp_path / f"worker{len(workers)}.log", queues)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


class LiveApi:
    """`c3 api` (or, with `command="serve"`, the API with its workers) as its own process on a
    free port (for tests that need real sockets, real workers, or must kill the API)."""

    def __init__(self, env: dict[str, str], command: str = "api") -> None:
        self.env, self.port, self.command = env, free_port(), command
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LiveApi:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", self.command, "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/healthz")
                return self
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    pytest.fail("the API did not start")
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: a crashed API, mid-request."""
        import signal

        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM; `serve` stops its workers first (a running job is checkpointed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any C3_ setting, plus `settings`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("C3_")} | settings


@dataclass(frozen=True)
class LiveService:
    url: str
    key: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """One `c3 serve` (the API, an inversion worker and the validation worker) that requires
    an API key, shared by the tests that use the service as a user would: the Python client,
    `c3 audit` and the README's walk-throughs. Its tenant's lists are shared: tests look up
    what they made, never assume an empty service."""
    data = tmp_path_factory.mktemp("live") / "data"
    env = clean_env(
        C3_DATA_DIR=str(data), C3_HEARTBEAT_SECONDS="0.5", C3_STALE_AFTER_SECONDS="3",
        C3_REAPER_SECONDS="1", C3_PROGRESS_EVERY_SECONDS="0.2", C3_TORCH_THREADS="1",
    )  # fmt: skip
    key = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--tenant", "live"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    api = LiveApi(env, "serve").start()
    yield LiveService(api.url, key, env)
    api.stop()
