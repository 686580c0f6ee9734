"""Nothing is lost when Redis restarts, or when the embedded service is stopped and started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.settings import ServiceSettings
from service.storage import open_stores
from tests.conftest import RedisServer, free_port
from tests.e2e.conftest import CLASSIFIER_FORM, Service, classifier_bytes, worker_env


def test_redis_restart_loses_no_record_and_the_job_finishes(
    persistent_redis: RedisServer, tmp_path: Path
) -> None:
    settings = ServiceSettings(data_dir=tmp_path / "data", redis_url=persistent_redis.url)
    stores = open_stores(settings)
    headers = {"Authorization": f"Bearer {create_key(stores.jobs, 'ops')}"}
    stores.close()
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as client:
        service = Service(
            client, worker_env(tmp_path / "data", persistent_redis.url), headers, tmp_path
        )
        service.env["C3_REDIS_PREFIX"] = "c3:"
        service.start_worker()
        try:
            classifier = service.upload_classifier()
            done = service.start_job(classifier_id=classifier["id"], samples_per_class=1, steps=10)
            service.wait(done["id"])
            running = service.start_job(
                classifier_id=classifier["id"], samples_per_class=2, steps=400
            )
            service.wait(running["id"], until=lambda j: (j["progress"] or {}).get("step", 0) > 0)
            before = {
                path: service.request("GET", path).json()["count"]
                for path in ("/classifiers", "/inversions")
            }
            persistent_redis.restart()
            after = {
                path: service.request("GET", path).json()["count"]
                for path in ("/classifiers", "/inversions")
            }
            assert after == before == {"/classifiers": 1, "/inversions": 2}
            assert service.job(done["id"])["state"] == "succeeded"
            finished = service.wait(running["id"])
            assert finished["state"] == "succeeded", finished
        finally:
            for worker in service.workers:
                worker.stop()


class ServeProcess:
    """`c3 serve` as a user runs it, on a free port."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **worker_env(data_dir, None)}
        env.pop("C3_REDIS_URL", None)
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port),
             "--data-dir", str(data_dir)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return
            except httpx.ConnectError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"c3 serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self._log.close()
        return code


def test_stopping_and_starting_the_embedded_service_keeps_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    serve = ServeProcess(data, tmp_path / "serve.log")
    client = httpx.Client(base_url=serve.url, timeout=120)

    def wait(id: str, until: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 180
        while not until(job := client.get(f"/inversions/{id}").json()):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        return job  # type: ignore[no-any-return]

    try:
        classifier = client.post(
            "/classifiers", headers={"Prefer": "wait=90"}, data=CLASSIFIER_FORM,
            files={"file": ("m.safetensors", classifier_bytes())},
        ).json()  # fmt: skip
        assert classifier["status"] == "ready", classifier
        short = client.post(
            "/inversions",
            json={"classifier_id": classifier["id"], "samples_per_class": 1, "steps": 10},
        ).json()
        wait(short["id"], lambda j: j["state"] == "succeeded")
        long = client.post(
            "/inversions",
            json={"classifier_id": classifier["id"], "samples_per_class": 1, "steps": 600},
        ).json()
        wait(long["id"], lambda j: (j.get("checkpoint_step") or 0) >= 10)
        workers = _children(serve.proc.pid)
        assert len(workers) == 2  # one inversion worker, one validation worker
    finally:
        assert serve.stop() == 0  # Ctrl-C: API and workers stop cleanly
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # no worker outlived `c3 serve`

    serve = ServeProcess(data, tmp_path / "serve2.log")
    client = httpx.Client(base_url=serve.url, timeout=120)
    try:
        assert client.get(f"/classifiers/{classifier['id']}").json()["status"] == "ready"
        assert client.get(f"/inversions/{short['id']}").json()["state"] == "succeeded"
        png = client.get(f"/inversions/{short['id']}/samples/0.png")
        assert png.status_code == 200
        assert png.headers["content-type"] == "image/png"
        resumed = wait(long["id"], lambda j: j["state"] in ("succeeded", "failed"))
        assert resumed["state"] == "succeeded", resumed
        assert resumed["attempts"] == 2
        assert resumed["resumed_from_step"] >= 10
    finally:
        serve.stop()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]
