"""End-to-end fixtures: the real app (in-process, through ASGI) with real Celery worker
processes, on the embedded default and on Redis. A small classifier trained on digits at 8×8
keeps jobs to a few seconds."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.settings import ServiceSettings
from service.storage import open_stores
from tests import factories
from tests.conftest import WorkerProcess

SHAPE = (1, 8, 8)
ARCH = "mlp"
E2E_REDIS_DB = 14
FINISHED = ("succeeded", "failed", "cancelled")
CLASSIFIER_FORM = {
    "name": "digits-8px",
    "format": "safetensors",
    "architecture": ARCH,
    "input_shape": "1,8,8",
    "class_names": ",".join(factories.DIGIT_CLASSES),
}


def worker_env(data_dir: Path, redis_url: str | None) -> dict[str, str]:
    env = {
        "C3_DATA_DIR": str(data_dir),
        "C3_HEARTBEAT_SECONDS": "0.5",
        "C3_STALE_AFTER_SECONDS": "3",
        "C3_REAPER_SECONDS": "1",
        "C3_CHECKPOINT_EVERY_STEPS": "10",
        "C3_PROGRESS_EVERY_SECONDS": "0.2",
        "C3_TORCH_THREADS": "1",
    }
    if redis_url:
        env |= {"C3_REDIS_URL": redis_url, "C3_REDIS_PREFIX": "e2e:"}
    return env


def classifier_bytes() -> bytes:
    return factories.safetensors_bytes(factories.trained_model(ARCH, SHAPE, epochs=10))


@dataclass
class Service:
    """The API client, the workers' environment and helpers that drive a whole job."""

    client: TestClient
    env: dict[str, str]
    headers: dict[str, str]
    workdir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self) -> WorkerProcess:
        log = self.workdir / f"worker{len(self.workers)}.log"
        worker = WorkerProcess(self.env, log)
        self.workers.append(worker)
        return worker

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def upload_classifier(self, data: bytes | None = None, **form: str) -> dict[str, Any]:
        response = self.request(
            "POST", "/classifiers", headers={"Prefer": "wait=90"},
            data={**CLASSIFIER_FORM, **form},
            files={"file": ("model.safetensors", data or classifier_bytes())},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def upload_reference(self) -> dict[str, Any]:
        response = self.request(
            "POST", "/datasets", headers={"Prefer": "wait=90"}, data={"name": "held-out"},
            files={"file": ("ref.npz", factories.digits_reference_npz(SHAPE, per_class=10))},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def start_job(self, **body: Any) -> dict[str, Any]:
        response = self.request("POST", "/inversions", json=body)
        assert response.status_code == 202, response.text
        return response.json()  # type: ignore[no-any-return]

    def job(self, id: str) -> dict[str, Any]:
        return self.request("GET", f"/inversions/{id}").json()  # type: ignore[no-any-return]

    def wait(self, id: str, until: Any = None, timeout: float = 180) -> dict[str, Any]:
        """Poll the job until `until(job)` holds (default: it has finished)."""
        until = until or (lambda j: j["state"] in FINISHED)
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                logs = "\n".join(w.log.read_text()[-3000:] for w in self.workers)
                pytest.fail(f"job {id} stuck: {job}\n{logs}")
            time.sleep(0.2)

    def png(self, path: str) -> bytes:
        response = self.request("GET", path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        return response.content  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["embedded", "redis"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_base_url: str
) -> Iterator[Service]:
    """One API and one worker per backend, shared by the tests of a module."""
    workdir = tmp_path_factory.mktemp(request.param)
    redis_url = f"{redis_base_url}/{E2E_REDIS_DB}" if request.param == "redis" else None
    if redis_url:
        redis.Redis.from_url(redis_url).flushdb()
    env = worker_env(workdir / "data", redis_url)
    settings = ServiceSettings(data_dir=workdir / "data", redis_url=redis_url, redis_prefix="e2e:")
    headers: dict[str, str] = {}
    if redis_url:  # production form: keys are always required
        stores = open_stores(settings)
        headers = {"Authorization": f"Bearer {create_key(stores.jobs, 'e2e')}"}
        stores.close()
    with running_service(settings, env, workdir, headers) as svc:
        yield svc
    if redis_url:
        redis.Redis.from_url(redis_url).flushdb()


@contextmanager
def running_service(
    settings: ServiceSettings, env: dict[str, str], workdir: Path, headers: dict[str, str]
) -> Iterator[Service]:
    """The API in-process (ASGI) and one real worker process, stopped on the way out."""
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        svc = Service(client=client, env=env, headers=headers, workdir=workdir)
        svc.start_worker()
        try:
            yield svc
        finally:
            for worker in svc.workers:
                worker.stop()


def decode_png(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data))
