"""The jobs API's own behaviour: validation, idempotency, cancel, resume, delete, SSE, lists,
metrics. Jobs here are never picked up (no worker runs); tests/e2e runs them for real."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.records import Record, UploadState
from service.settings import ServiceSettings
from service.storage import open_stores
from tests import records
from tests.service.test_uploads import problem


def seed(record: Record) -> str:
    """A record as a worker would have left it (the API tests run no worker)."""
    stores = open_stores(ServiceSettings())
    try:
        stores.jobs.create(record)
        return record.id
    finally:
        stores.close()


@pytest.fixture
def classifier(api: TestClient) -> str:
    return seed(records.classifier_record(side=28))


def dataset(state: UploadState, shape: tuple[int, int, int]) -> str:
    return seed(records.dataset_record(shape=shape, count=10, state=state))


def start(api: TestClient, classifier: str, **body: Any) -> Any:
    return api.post("/inversions", json={"classifier_id": classifier, **body})


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"classes": [3, 10]}, "classes", "out of range"),
        ({"classes": [1, 1]}, "classes", "unique"),
        ({"classes": []}, "classes", "at least 1"),
        ({"samples_per_class": 1_000_000}, "samples_per_class", "at most"),
        ({"samples_per_class": 0}, "samples_per_class", "greater than or equal to 1"),
        ({"steps": 50_000}, "steps", "at most 20000 on this service"),
        ({"steps": 10**9}, "steps", "less than or equal to 100000"),  # the engine's own limit
        ({"batch_size": 1}, "batch_size", "greater than or equal to 2"),
        ({"method": "gan"}, "method", "'c3', 'soft' or 'pixel'"),
        ({"loss_weights": {"beauty": 1}}, "loss_weights.beauty", "Extra inputs"),
        ({"loss_weights": {"kl": -1}}, "loss_weights.kl", "greater than or equal to 0"),
        ({"seed": -5}, "seed", "greater than or equal to 0"),
        ({"dataset_id": "ds_nope"}, "dataset_id", "no dataset"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_bad_requests_name_the_field(
    api: TestClient, classifier: str, body: dict[str, Any], field: str, words: str
) -> None:
    result = problem(start(api, classifier, **body), 422)
    assert result["field"] == field
    assert words in result["detail"]


def test_classifier_and_dataset_must_be_ready_and_match(api: TestClient, classifier: str) -> None:
    pending = seed(records.classifier_record(name="bad", state=UploadState.REJECTED))
    body = problem(start(api, pending), 422)
    assert "is rejected, not ready" in body["detail"]
    assert body["field"] == "classifier_id"
    other_shape = dataset(UploadState.READY, (3, 32, 32))
    body = problem(start(api, classifier, dataset_id=other_shape), 422)
    assert "[3, 32, 32]" in body["detail"]
    assert (
        start(api, classifier, dataset_id=dataset(UploadState.READY, (1, 28, 28))).status_code
        == 202
    )
    assert problem(
        api.post("/inversions", content=b"{", headers={"content-type": "application/json"}), 422
    )


def test_start_read_and_list(api: TestClient, classifier: str) -> None:
    created = start(api, classifier, classes=[0, 1], samples_per_class=3, method="soft")
    assert created.status_code == 202
    job = created.json()
    assert created.headers["location"] == f"/inversions/{job['id']}"
    assert created.headers["retry-after"] == "2"
    assert job["state"] == "queued"
    assert job["attempts"] == 0
    assert job["params"]["classes"] == [0, 1]
    assert isinstance(job["params"]["seed"], int)
    read = api.get(f"/inversions/{job['id']}")
    assert read.json()["id"] == job["id"]
    assert read.headers["retry-after"] == "2"
    start(api, classifier)
    assert api.get("/inversions").json()["count"] == 2
    assert api.get("/inversions", params={"method": "soft"}).json()["count"] == 1
    assert api.get("/inversions", params={"classifier_id": "clf_x"}).json()["count"] == 0
    page = api.get("/inversions", params={"limit": 1}).json()
    assert page["count"] == 2
    assert len(page["data"]) == 1
    assert problem(api.get(f"/inversions/{job['id']}/samples"), 409)
    assert problem(api.get(f"/inversions/{job['id']}/grid.png"), 409)
    assert problem(api.post(f"/inversions/{job['id']}/samples", json={}), 409)


def test_idempotency_key(api: TestClient, classifier: str) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = api.post("/inversions", json={"classifier_id": classifier, "seed": 1}, headers=headers)
    again = api.post("/inversions", json={"classifier_id": classifier, "seed": 1}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert api.get("/inversions").json()["count"] == 1
    changed = api.post(
        "/inversions", json={"classifier_id": classifier, "seed": 2}, headers=headers
    )
    assert problem(changed, 422)["field"] == "Idempotency-Key"
    other_key = api.post(
        "/inversions",
        json={"classifier_id": classifier, "seed": 1},
        headers={"Idempotency-Key": "k-2"},
    )
    assert other_key.json()["id"] != first.json()["id"]


def test_cancel_resume_delete_and_events(api: TestClient, classifier: str) -> None:
    job = start(api, classifier).json()
    assert problem(api.delete(f"/inversions/{job['id']}"), 409)["detail"].endswith(
        "cancel it first"
    )
    assert problem(api.delete(f"/classifiers/{classifier}"), 409)["jobs"] == [job["id"]]
    cancelled = api.post(f"/inversions/{job['id']}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json()["state"] == "cancelled"
    assert "retry-after" not in cancelled.headers
    assert problem(api.post(f"/inversions/{job['id']}/cancel"), 409)

    with api.stream("GET", f"/inversions/{job['id']}/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        text = "".join(events.iter_text())
    assert 'event: state\ndata: {"type":"state","state":"queued"}\nid: 1\n' in text
    assert '"state":"cancelled"' in text
    with api.stream(
        "GET", f"/inversions/{job['id']}/events", headers={"Last-Event-ID": "1"}
    ) as events:
        resumed = "".join(events.iter_text())
    assert '"state":"queued"' not in resumed
    assert "id: 2\n" in resumed

    again = api.post(f"/inversions/{job['id']}/resume")
    assert again.status_code == 202
    assert again.json()["state"] == "queued"
    api.post(f"/inversions/{job['id']}/cancel")
    assert api.delete(f"/inversions/{job['id']}").status_code == 204
    assert problem(api.get(f"/inversions/{job['id']}"), 404)
    assert api.delete(f"/classifiers/{classifier}").status_code == 204


def test_prometheus_metrics(api: TestClient, classifier: str) -> None:
    start(api, classifier)
    cancelled = start(api, classifier).json()
    api.post(f"/inversions/{cancelled['id']}/cancel")
    text = api.get("/metrics").text
    assert 'c3_jobs{state="queued"} 1.0' in text
    assert 'c3_jobs{state="cancelled"} 1.0' in text
    assert "c3_queue_depth 1.0" in text
    assert "c3_job_duration_seconds_count 0.0" in text
    assert "c3_step_rate 0.0" in text
