"""Access control, tenant isolation, problem+json errors, and the API staying torch-free."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
from fastapi.testclient import TestClient

from tests.conftest import free_port
from tests.service.conftest import auth, make_key

CLASSIFIER_FORM = {
    "name": "digits",
    "format": "safetensors",
    "architecture": "paper-cnn",
    "input_shape": "1,28,28",
    "class_names": ",".join(str(i) for i in range(10)),
}


def upload(
    client: TestClient, headers: dict[str, str] | None = None, **form: str
) -> httpx.Response:
    return client.post(
        "/classifiers",
        data={**CLASSIFIER_FORM, **form},
        files={"file": ("m.safetensors", b"not really weights", "application/octet-stream")},
        headers=headers or {},
    )


def test_health_needs_no_key_and_readiness_checks_everything(api: TestClient) -> None:
    make_key("a")  # keys exist: everything but health needs one now
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "job_store": "ok",
        "broker": "ok",
        "blob_store": "ok",
        "disk": "ok",
    }
    assert api.get("/classifiers").status_code == 401


def test_loopback_without_keys_serves_the_local_tenant(api: TestClient) -> None:
    response = api.get("/classifiers")
    assert response.status_code == 200
    assert response.json() == {"data": [], "count": 0, "next": None}


def test_keys_required_once_configured(api: TestClient) -> None:
    key = make_key("team-a")
    missing = api.get("/classifiers")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert "c3 keys create" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = api.get("/classifiers", headers=auth("c3k_wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "unknown API key"
    assert api.get("/classifiers", headers=auth(key)).status_code == 200


def test_non_loopback_clients_need_keys(c3_env: dict[str, str]) -> None:
    from service.app import create_app
    from service.settings import ServiceSettings

    with TestClient(create_app(ServiceSettings()), client=("10.1.2.3", 4000)) as remote:
        assert remote.get("/classifiers").status_code == 401


def test_tenants_cannot_see_each_other(api: TestClient) -> None:
    a, b = auth(make_key("a")), auth(make_key("b"))
    created = upload(api, a)
    assert created.status_code == 202, created.text
    id = created.json()["id"]
    assert created.headers["location"] == f"/classifiers/{id}"
    assert api.get(f"/classifiers/{id}", headers=a).status_code == 200
    for method, path in [
        ("GET", f"/classifiers/{id}"),
        ("DELETE", f"/classifiers/{id}"),
        ("GET", f"/classifiers/{id}/file"),
        ("GET", "/inversions/job_x"),
    ]:
        response = api.request(method, path, headers=b)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
    assert api.get("/classifiers", headers=b).json()["count"] == 0
    assert api.get("/classifiers", headers=a).json()["count"] == 1
    job = api.post("/inversions", json={"classifier_id": id}, headers=b)
    assert job.status_code == 422
    assert job.json()["field"] == "classifier_id"
    assert "no classifier" in job.json()["detail"]


def test_service_refuses_a_public_bind_without_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "C3_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0",
         "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr


def test_api_starts_on_a_public_bind_once_a_key_exists(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "C3_DATA_DIR": str(tmp_path / "data")}
    key = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--tenant", "ops"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert key.startswith("c3k_")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--host", "0.0.0.0", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "API did not start"
                time.sleep(0.2)
        assert health.status_code == 200
        listing = httpx.get(f"http://127.0.0.1:{port}/classifiers", headers=auth(key))
        assert listing.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/classifiers").status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_readiness_reports_an_unreachable_store(c3_env: dict[str, str]) -> None:
    from service.app import create_app
    from service.settings import ServiceSettings

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with TestClient(create_app(ServiceSettings(redis_url=dead)), client=("127.0.0.1", 1)) as api:
        assert api.get("/healthz").status_code == 200  # the process is up ...
        ready = api.get("/readyz")
        assert ready.status_code == 503  # ... but not ready
        assert ready.json()["checks"]["job_store"].startswith("unavailable")
        assert ready.json()["checks"]["broker"].startswith("unavailable")
        assert ready.json()["checks"]["blob_store"] == "ok"
