"""Fair turns with a real worker, on the embedded default and on Redis: tenant A queues a burst
of jobs, tenant B one job after them; one worker runs them all, and B's job starts next after
the job A had running, not after A's whole burst (service.fairness)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.auth import create_key
from service.settings import ServiceSettings
from service.storage import open_stores
from tests.e2e.conftest import Service, running_service, worker_env

BURST = 5
TINY_JOB = {"samples_per_class": 2, "steps": 5, "classes": [0, 1], "recipe": "paper"}


@pytest.fixture(params=["embedded", "redis"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    env = worker_env(tmp_path / "data", redis_url)
    settings = ServiceSettings(data_dir=tmp_path / "data", redis_url=redis_url, redis_prefix="e2e:")
    with running_service(settings, env, tmp_path, {}) as svc:
        yield svc


def tenant_headers(service: Service, tenant: str) -> dict[str, str]:
    settings = ServiceSettings(
        data_dir=Path(service.env["C3_DATA_DIR"]), redis_url=service.env.get("C3_REDIS_URL"),
        redis_prefix="e2e:",
    )  # fmt: skip
    stores = open_stores(settings)
    try:
        return {"Authorization": f"Bearer {create_key(stores.jobs, tenant)}"}
    finally:
        stores.close()


def test_one_tenants_burst_does_not_starve_another(service: Service) -> None:
    tenants = {name: tenant_headers(service, name) for name in ("a", "b")}
    classifiers = {}
    for name, headers in tenants.items():
        service.headers = headers
        classifiers[name] = service.upload_classifier()["id"]
    service.headers = tenants["a"]
    burst = [service.start_job(classifier_id=classifiers["a"], **TINY_JOB)["id"]]
    service.wait(burst[0], until=lambda job: job["state"] != "queued")  # the worker is busy
    burst += [service.start_job(classifier_id=classifiers["a"], **TINY_JOB)["id"]
              for _ in range(BURST - 1)]  # fmt: skip
    service.headers = tenants["b"]
    late = service.start_job(classifier_id=classifiers["b"], **TINY_JOB)["id"]
    assert service.wait(late)["state"] == "succeeded"
    service.headers = tenants["a"]
    started = {id: service.wait(id)["started_at"] for id in burst}
    service.headers = tenants["b"]
    started[late] = service.job(late)["started_at"]
    order = sorted(started, key=started.__getitem__)
    assert order == [burst[0], late, *burst[1:]], order
