"""One request id from the API through the worker: the JSON log lines of the API's request
and of the worker's run of the job it queued carry the same request id, tenant and job id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from service import logs
from service.app import create_app
from service.auth import create_key
from service.settings import ServiceSettings
from service.storage import open_stores
from tests.e2e.conftest import Service, worker_env

REQUEST_ID = "req-e2e-obs-1"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """This process logs JSON (as `C3_LOG_FORMAT=json` makes `c3 api`), here to a buffer."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("json")
    buffer = io.StringIO()
    cast(logging.StreamHandler, root.handlers[0]).setStream(buffer)  # type: ignore[type-arg]
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_request_id_tenant_and_job_id_reach_the_workers_logs(
    tmp_path: Path, redis_url: str, json_logs: io.StringIO
) -> None:
    settings = ServiceSettings(data_dir=tmp_path / "data", redis_url=redis_url, redis_prefix="e2e:")
    stores = open_stores(settings)
    headers = {"Authorization": f"Bearer {create_key(stores.jobs, 'obs')}"}
    stores.close()
    env = worker_env(tmp_path / "data", redis_url) | {"C3_LOG_FORMAT": "json"}
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        service = Service(client=client, env=env, headers=headers, workdir=tmp_path)
        worker = service.start_worker()
        try:
            classifier = service.upload_classifier()
            response = service.request(
                "POST", "/inversions", headers={"X-Request-ID": REQUEST_ID},
                json={"classifier_id": classifier["id"], "samples_per_class": 2, "steps": 5},
            )  # fmt: skip
            assert response.status_code == 202, response.text
            assert response.headers["X-Request-ID"] == REQUEST_ID
            job = response.json()["id"]
            assert service.wait(job)["state"] == "succeeded"
            fresh = service.request("GET", f"/inversions/{job}", headers={"X-Request-ID": "a b"})
            assert fresh.headers["X-Request-ID"] not in ("", "a b")  # unsafe: a new id
        finally:
            worker.stop()
    api = [line for line in json_lines(json_logs.getvalue()) if line.get("job_id") == job]
    started = [line for line in api if line["message"].startswith("POST /inversions 202")]
    assert started, api
    assert started[0]["request_id"] == REQUEST_ID
    assert started[0]["tenant"] == "obs"
    ran = [line for line in json_lines(worker.log.read_text()) if line.get("job_id") == job]
    messages = [line["message"] for line in ran]
    assert f"job {job} started (attempt 1, turn 0)" in messages, messages
    assert f"job {job} succeeded" in messages, messages
    assert {(line["request_id"], line["tenant"]) for line in ran} == {(REQUEST_ID, "obs")}
