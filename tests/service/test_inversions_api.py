"""The jobs API's own behaviour: validation, idempotency, cancel, resume, delete, SSE, lists,
metrics. Jobs here are never picked up (no worker runs); tests/e2e runs them for real."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.contracts.artifacts import ArtifactName, SamplesArrays
from models.contracts.cost import CostProfile
from models.contracts.inversion import RECIPE_DEFAULTS
from service.app import create_app
from service.records import JobParams, Record, UploadState
from service.settings import ServiceSettings
from service.storage import Stores, keys, open_stores
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
        ({"recipe": "magic"}, "recipe", "'adaptive', 'paper' or 'fade'"),
        ({"target_confident_share": 1.5}, "target_confident_share", "less than or equal to 1"),
        ({"diversity_floor": -0.1}, "diversity_floor", "greater than or equal to 0"),
        ({"detectors": ["energy"]}, "detectors.0", "'mahalanobis' or 'knn'"),
        ({"method": "pixel", "detectors": ["knn"]}, "method", "only c3 is detector-aware"),
        ({"prior_source": "classifier"}, "prior_source", "only detector-aware c3 builds a prior"),
        ({"detectors": ["knn"], "prior_source": "nature"}, "prior_source", "'reference' or"),
    ],
)
def test_bad_requests_name_the_field(
    api: TestClient, classifier: str, body: dict[str, Any], field: str, words: str
) -> None:
    result = problem(start(api, classifier, **body), 422)
    assert result["field"] == field
    assert words in result["detail"]


def test_detector_aware_c3_without_data_needs_batchnorm_statistics(api: TestClient) -> None:
    """Said at submission, not by a failed job: the validation counted the BatchNorm layers."""
    folded = seed(records.classifier_record(side=28, batch_norm_layers=0))  # e.g. ONNX
    kept = seed(records.classifier_record(side=28, batch_norm_layers=7))
    reference = dataset(UploadState.READY, (1, 28, 28))
    aware = {"detectors": ["mahalanobis"], "steps": 10, "samples_per_class": 1}
    body = problem(start(api, folded, **aware), 422)
    assert body["field"] == "dataset_id"
    assert "needs a reference set" in body["detail"]
    body = problem(
        start(api, folded, dataset_id=reference, prior_source="classifier", **aware), 422
    )
    assert body["field"] == "prior_source"
    assert "no BatchNorm layers" in body["detail"]
    assert start(api, folded, dataset_id=reference, **aware).status_code == 202
    assert start(api, kept, **aware).status_code == 202
    assert (
        start(api, kept, dataset_id=reference, prior_source="classifier", **aware).status_code
        == 202
    )
    assert api.get(f"/classifiers/{kept}").json()["batch_norm_layers"] == 7


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
    malformed = problem(
        api.post("/inversions", content=b"{", headers={"content-type": "application/json"}), 422
    )
    assert malformed["field"] == "body"  # not the character position pydantic reports
    assert "not valid JSON" in malformed["detail"]


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


def test_recipe_and_targets_reach_the_engine_and_the_verdict(
    api: TestClient, classifier: str
) -> None:
    chosen = {"recipe": "paper", "target_class_confident_share": 0.9,
              "target_argmax_share": 0.98, "diversity_floor": 0.25}  # fmt: skip
    job = start(api, classifier, **chosen).json()
    assert {k: job["params"][k] for k in chosen} == chosen
    config = JobParams.model_validate(job["params"]).config("c3")
    assert config.recipe == "paper"
    assert config.steps == RECIPE_DEFAULTS["paper"].steps
    assert config.diversity_floor == 0.25
    assert config.targets.class_confident_share == 0.9
    assert config.targets.argmax_share == 0.98
    assert config.targets.confident_share == 0.99  # the default where none was chosen
    default = JobParams.model_validate(start(api, classifier).json()["params"]).config("c3")
    assert default.recipe == "adaptive"
    assert default.steps == RECIPE_DEFAULTS["adaptive"].steps


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


# --- bounds: every request's work is bounded by its parameters ---------------------------------


def stores_of(api: TestClient) -> Stores:
    return open_stores(api.app.state.settings)  # type: ignore[attr-defined]


def test_a_job_over_the_memory_budget_is_refused_with_the_figures(api: TestClient) -> None:
    """The service's own limits allow 1,000 classes × 100 samples of 4×512×512: estimated at
    submission, such a job is refused before it can take a worker down."""
    opened = stores_of(api)
    try:
        big = records.classifier_record(classes=1000, architecture="paper-cnn")
        big = big.model_copy(update={"input_shape": (4, 512, 512), "mean": (0.0,)})
        opened.jobs.create(big)
        profiled = records.classifier_record(side=28)
        # measured by the validation: a graph that pads by the batch (memory ∝ batch²)
        profiled.cost = CostProfile(
            batch_sizes=[1, 2, 4, 8, 16],
            activation_bytes=[2**20 * b * b for b in (1, 2, 4, 8, 16)],
            seconds=[0.01] * 5,
        )
        opened.jobs.create(profiled)
    finally:
        opened.close()
    over_cap = problem(start(api, big.id, samples_per_class=1000), 422)
    assert over_cap["field"] == "samples_per_class"
    assert "1,000,000 samples" in over_cap["detail"]
    assert "at most 100 per class" in over_cap["detail"]
    huge = problem(start(api, big.id, samples_per_class=100), 422)
    assert "MB one job may use on this service" in huge["detail"]
    assert huge["estimate"]["total"] > 4096 * 2**20
    assert huge["estimate"]["samples"] > huge["estimate"]["reference"]
    fewer = problem(start(api, big.id, samples_per_class=1, classes=[0, 1]), 422)
    assert "the generator grows with the classes" in fewer["detail"]
    padded = problem(start(api, profiled.id, batch_size=256, samples_per_class=2), 422)
    assert padded["field"] == "batch_size"
    assert "smaller batch_size" in padded["detail"]
    assert start(api, profiled.id, batch_size=16, samples_per_class=2).status_code == 202


def test_repeated_classes_are_refused_everywhere(api: TestClient) -> None:
    opened = stores_of(api)
    try:
        done = records.seed_job(opened, records.seed_classifier(opened, side=8), per_class=3)
    finally:
        opened.close()
    more = api.post(f"/inversions/{done.id}/samples", json={"classes": [0] * 10_000})
    assert problem(more, 422)["field"] == "classes"
    grid = api.get(f"/inversions/{done.id}/grid.png", params={"classes": "0,0,0"})
    assert "each class at most once" in problem(grid, 422)["detail"]
    assert api.get(f"/inversions/{done.id}/grid.png", params={"classes": "0,1"}).status_code == 200


def test_the_grid_is_bounded_and_says_what_fits(api: TestClient) -> None:
    opened = stores_of(api)
    try:
        classifier = records.seed_classifier(opened, side=512, classes=5)
        done = records.seed_job(opened, classifier, per_class=30, reference=False)
    finally:
        opened.close()
    url = f"/inversions/{done.id}/grid.png"
    too_big = problem(api.get(url, params={"per_class": 30}), 422)  # 5 × 30 of 512×512
    assert "megapixels" in too_big["detail"]
    per_class = int(too_big["detail"].rsplit("per_class=", 1)[1].rstrip(")"))
    fits = api.get(url, params={"per_class": per_class})
    assert fits.status_code == 200
    assert api.get(url).content == fits.content  # by default, as many as fit
    assert problem(api.get(f"{url}?per_class=0"), 422)


def test_the_grid_wraps_each_class_under_its_name(api: TestClient) -> None:
    from service.images import LABEL_HEIGHT

    opened = stores_of(api)
    try:
        classifier = records.seed_classifier(opened, side=8, classes=10)
        done = records.seed_job(opened, classifier, classes=[2, 5, 7], per_class=40)
        pixels = SamplesArrays.from_npz(
            opened.artifacts.get(keys.job_artifact(done.tenant, done.id, ArtifactName.SAMPLES_NPZ))
        ).x
    finally:
        opened.close()
    grid = np.asarray(Image.open(io.BytesIO(api.get(f"/inversions/{done.id}/grid.png").content)))
    tile, rows, block = 8 + 2, 3, LABEL_HEIGHT + 3 * (8 + 2)  # 40 samples: 16 + 16 + 8 a row
    assert grid.shape == (3 * block - 2 + 4, 16 * tile - 2 + 4)
    for b, cls in enumerate([2, 5, 7]):
        top = 2 + b * block
        label = grid[top : top + LABEL_HEIGHT, 2:]
        assert (label < 128).sum() > 10, f"no label drawn for class {cls}"
        for i in (0, 15, 16, 39):  # first, end of a row, start of the next, last
            row, column = divmod(i, 16)
            y, x = top + LABEL_HEIGHT + row * tile, 2 + column * tile
            assert (grid[y : y + 8, x : x + 8] == pixels[b * 40 + i][0]).all(), (cls, i)
        empty = grid[top + LABEL_HEIGHT + (rows - 1) * tile :, 2 + 8 * tile :][:8, :]
        assert (empty == 255).all()  # the last row of 8 leaves the rest white
    two = api.get(f"/inversions/{done.id}/grid.png", params={"per_class": 4, "classes": "5,7"})
    assert Image.open(io.BytesIO(two.content)).size == (
        4 * tile - 2 + 4,
        2 * (LABEL_HEIGHT + tile) - 2 + 4,
    )


def test_reference_labels_must_be_the_classifiers_classes(api: TestClient, classifier: str) -> None:
    opened = stores_of(api)
    try:
        dataset = records.dataset_record(shape=(1, 28, 28))
        dataset.label_max = 12
        opened.jobs.create(dataset)
    finally:
        opened.close()
    body = problem(start(api, classifier, dataset_id=dataset.id), 422)
    assert body["field"] == "dataset_id"
    assert "labels up to 12, the classifier only 10 classes" in body["detail"]


def test_quotas_answer_429_with_retry_after(
    c3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C3_QUOTA_ACTIVE_JOBS", "2")
    monkeypatch.setenv("C3_QUOTA_STORED_BYTES", "1000")
    with TestClient(create_app(ServiceSettings()), client=("127.0.0.1", 50000)) as client:
        clf = seed(records.classifier_record(side=28))
        for _ in range(2):
            assert start(client, clf, samples_per_class=1).status_code == 202
        third = client.post("/inversions", json={"classifier_id": clf, "samples_per_class": 1})
        assert problem(third, 429)["detail"].startswith("2 of your jobs are queued or running")
        assert third.headers["retry-after"] == "30"
        upload = client.post(
            "/classifiers",
            data={"name": "x", "format": "onnx", "input_shape": "1,8,8", "class_names": "a,b"},
            files={"file": ("m.onnx", b"\0" * 2000)},
        )
        assert "would pass your quota" in problem(upload, 429)["detail"]
        assert upload.headers["retry-after"]
