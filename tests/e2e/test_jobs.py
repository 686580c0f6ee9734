"""From upload to counterfeits through a real worker, on the embedded default and on Redis."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
import torch

from models.loading import load_classifier
from service.exports import Manifest
from service.images import LABEL_HEIGHT
from service.storage.local_blobs import LocalArtifactStore
from tests import factories
from tests.e2e.conftest import ARCH, SHAPE, Service, classifier_bytes, decode_png


@pytest.fixture(scope="module")
def finished(service: Service) -> dict[str, Any]:
    """A classifier, a reference set and a succeeded c3 job on them (shared by this module)."""
    classifier = service.upload_classifier()
    dataset = service.upload_reference()
    job = service.start_job(
        classifier_id=classifier["id"], dataset_id=dataset["id"], samples_per_class=4,
        steps=40, seed=7,
    )  # fmt: skip
    done = service.wait(job["id"])
    assert done["state"] == "succeeded", done
    return {"classifier": classifier, "dataset": dataset, "job": done}


def test_upload_is_validated_in_the_worker(service: Service, finished: dict[str, Any]) -> None:
    classifier = finished["classifier"]
    assert classifier["status"] == "ready"
    assert classifier["param_count"] > 0
    assert classifier["forward_latency_ms"] > 0
    assert classifier["batch_norm_layers"] == 0  # the MLP has none: no data-free prior
    canonical = service.request("GET", f"/classifiers/{classifier['id']}/file")
    assert canonical.status_code == 200
    loaded = load_classifier(canonical.content, factories.spec("safetensors", SHAPE, 10, ARCH))
    assert loaded.num_classes == 10
    dataset = finished["dataset"]
    assert dataset["status"] == "ready"
    assert dataset["count"] == 100
    assert dataset["input_shape"] == list(SHAPE)
    assert dataset["has_labels"] is True


def test_job_reports_progress_metrics_and_timings(finished: dict[str, Any]) -> None:
    job = finished["job"]
    assert job["attempts"] == 1
    assert job["started_at"] >= job["created_at"]
    assert job["finished_at"] >= job["started_at"]
    assert job["progress"]["phase"] == "done"
    assert job["progress"]["step"] == 40
    assert job["sample_count"] == 40
    metrics = job["metrics"]
    for name in (
        "mean_confidence",
        "confident_share",
        "argmax_accuracy",
        "msp_auroc",
        "knn_pixel_auroc",
        "nn_distance",
        "pixel_diversity",
    ):
        assert metrics[name] is not None, name
    assert "retry-after" not in job
    verdict = job["verdict"]  # 40 steps of the adaptive recipe: its budget, not its targets
    assert verdict["training"]["stop_reason"] == "budget_spent"
    assert verdict["training"]["steps"] == 40
    missed = [c for c in verdict["checks"] if c["met"] is False]
    assert (not missed) == verdict["met"]
    if missed:
        assert f"Missed: {missed[0]['description']}" in verdict["summary"]


def test_png_samples_carry_the_reported_confidences(
    service: Service, finished: dict[str, Any]
) -> None:
    """Re-read every PNG, classify it again: the reported confidence is what the image gets."""
    job = finished["job"]
    listing = service.request("GET", f"/inversions/{job['id']}/samples", params={"limit": 100})
    samples = listing.json()
    assert samples["count"] == 40
    classifier = load_classifier(classifier_bytes(), factories.spec("safetensors", SHAPE, 10, ARCH))
    images, targets, reported = [], [], []
    for sample in samples["data"]:
        pixels = np.asarray(decode_png(service.png(sample["image_url"])), dtype=np.float32) / 255
        images.append(torch.from_numpy(pixels)[None])
        targets.append(sample["target"])
        reported.append(sample["confidence"])
        assert sample["top_k"][0]["probability"] >= sample["confidence"]
        assert sample["target_name"] == str(sample["target"])
    with torch.no_grad():
        probs = classifier(torch.stack(images)).softmax(1)
    again = probs.gather(1, torch.tensor(targets)[:, None]).squeeze(1)
    assert torch.allclose(again, torch.tensor(reported), atol=1e-5)


def test_sample_filters_pages_and_images(service: Service, finished: dict[str, Any]) -> None:
    id = finished["job"]["id"]
    three = service.request("GET", f"/inversions/{id}/samples", params={"class": 3}).json()
    assert three["count"] == 4
    assert {s["target"] for s in three["data"]} == {3}
    page = service.request("GET", f"/inversions/{id}/samples", params={"offset": 38, "limit": 5})
    assert [s["index"] for s in page.json()["data"]] == [38, 39]
    sure = service.request("GET", f"/inversions/{id}/samples", params={"min_confidence": 0.5})
    assert all(s["confidence"] >= 0.5 for s in sure.json()["data"])

    first = service.request("GET", f"/inversions/{id}/samples/0.png")
    assert first.headers["cache-control"] == "private, max-age=31536000, immutable"
    etag = first.headers["etag"]
    cached = service.request(
        "GET", f"/inversions/{id}/samples/0.png", headers={"If-None-Match": etag}
    )
    assert cached.status_code == 304
    assert cached.content == b""
    assert service.request("GET", f"/inversions/{id}/samples/999.png").status_code == 404

    grid = decode_png(service.png(f"/inversions/{id}/grid.png"))
    two_rows = decode_png(service.png(f"/inversions/{id}/grid.png?classes=1,7"))
    assert grid.width == two_rows.width
    pad = 2  # a block per class: its label, then its 4 samples in one row
    assert grid.height - pad == 5 * (two_rows.height - pad)
    assert two_rows.height == 2 * (LABEL_HEIGHT + SHAPE[1] + pad) + pad
    assert service.request("GET", f"/inversions/{id}/grid.png?classes=x").status_code == 422


def test_exports(service: Service, finished: dict[str, Any]) -> None:
    id = finished["job"]["id"]
    archive = zipfile.ZipFile(
        io.BytesIO(service.request("GET", f"/inversions/{id}/samples.zip").content)
    )
    names = archive.namelist()
    assert sum(n.endswith(".png") for n in names) == 40
    assert len(json.loads(archive.read("samples.json"))) == 40
    assert "overall" in json.loads(archive.read("metrics.json"))
    npz = np.load(io.BytesIO(service.request("GET", f"/inversions/{id}/samples.npz").content))
    assert npz["x"].shape == (40, *SHAPE)
    assert npz["x"].dtype == np.uint8
    reject = np.load(io.BytesIO(service.request("GET", f"/inversions/{id}/dataset").content))
    assert set(reject["y"].tolist()) == {10}  # every counterfeit labelled "reject" (class K)
    assert list(reject["counterfeit_of"][:4]) == [0, 0, 0, 0]
    metrics = service.request("GET", f"/inversions/{id}/metrics.json").json()
    assert set(metrics["per_class"]) == set(factories.DIGIT_CLASSES)


def test_the_worker_stores_the_exports_before_the_job_succeeds(
    service: Service, finished: dict[str, Any]
) -> None:
    id = finished["job"]["id"]
    blobs = LocalArtifactStore(service.workdir / "data" / "blobs")
    key = next(k for k in blobs.list("tenants") if k.endswith(f"/{id}/files.json"))
    manifest = Manifest.model_validate_json(blobs.get(key))
    assert {"samples.zip", "reject-class.npz", "index.npz", "samples.npz"} <= set(manifest.files)
    download = service.request("GET", f"/inversions/{id}/samples.zip")
    assert download.headers["etag"] == manifest.files["samples.zip"].etag
    assert len(download.content) == manifest.files["samples.zip"].bytes


def test_audit_report_has_the_evasion_table(service: Service, finished: dict[str, Any]) -> None:
    report = service.request("GET", f"/inversions/{finished['job']['id']}/report")
    assert report.status_code == 200
    body = json.dumps(report.json())
    for detector in ("max-softmax", "energy", "mahalanobis", "knn"):
        assert detector in body


def test_events_stream_a_live_job(service: Service, finished: dict[str, Any]) -> None:
    job = service.start_job(
        classifier_id=finished["classifier"]["id"], samples_per_class=2, steps=60
    )
    events: list[tuple[int, str, dict[str, Any]]] = []
    with service.client.stream(
        "GET", f"/inversions/{job['id']}/events", headers=service.headers
    ) as stream:
        fields: dict[str, str] = {}
        for line in stream.iter_lines():
            if line:  # an event's fields, until a blank line dispatches it (the SSE spec)
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            fields = {}
    assert events[0][2]["state"] == "queued"
    assert events[-1][1] == "state"
    assert events[-1][2]["state"] == "succeeded"
    steps = [e[2]["step"] for e in events if e[1] == "progress" and e[2]["phase"] == "training"]
    assert steps
    assert steps == sorted(steps)
    assert steps[-1] == 60
    middle = events[len(events) // 2][0]
    with service.client.stream(
        "GET",
        f"/inversions/{job['id']}/events",
        headers={**service.headers, "Last-Event-ID": str(middle)},
    ) as again:
        resumed = [int(line[4:]) for line in again.iter_lines() if line.startswith("id: ")]
    assert resumed == [e[0] for e in events if e[0] > middle]


def test_cancel_a_running_job_then_resume_it(service: Service, finished: dict[str, Any]) -> None:
    job = service.start_job(
        classifier_id=finished["classifier"]["id"], samples_per_class=2, steps=1000, seed=3
    )
    service.wait(job["id"], until=lambda j: (j.get("checkpoint_step") or 0) >= 10)
    cancelled = service.request("POST", f"/inversions/{job['id']}/cancel")
    assert cancelled.status_code == 202
    stopped = service.wait(job["id"])
    assert stopped["state"] == "cancelled"
    step_at_cancel = stopped["progress"]["step"]
    assert 0 < step_at_cancel < 1000
    resumed = service.request("POST", f"/inversions/{job['id']}/resume")
    assert resumed.status_code == 202
    done = service.wait(job["id"])
    assert done["state"] == "succeeded"
    assert done["progress"]["step"] == 1000


def test_follow_up_sampling_needs_no_training(service: Service, finished: dict[str, Any]) -> None:
    parent = finished["job"]
    follow = service.request(
        "POST",
        f"/inversions/{parent['id']}/samples",
        json={"samples_per_class": 3, "classes": [2, 5], "seed": 11},
    )
    assert follow.status_code == 202, follow.text
    job = service.wait(follow.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["kind"] == "sampling"
    assert job["parent_id"] == parent["id"]
    assert job["sample_count"] == 6
    new = service.request("GET", f"/inversions/{job['id']}/samples").json()["data"]
    assert [s["target"] for s in new] == [2, 2, 2, 5, 5, 5]
    old = service.png(f"/inversions/{parent['id']}/samples/8.png")  # parent's first class-2
    assert service.png(new[0]["image_url"]) != old  # a new seed draws new images
    untrained = service.request(
        "POST", f"/inversions/{parent['id']}/samples", json={"classes": [42]}
    )
    assert untrained.status_code == 422


def test_worker_killed_mid_training_resumes_from_its_checkpoint(
    service: Service, finished: dict[str, Any]
) -> None:
    job = service.start_job(
        classifier_id=finished["classifier"]["id"], samples_per_class=2, steps=600, seed=5
    )
    service.wait(job["id"], until=lambda j: (j.get("checkpoint_step") or 0) >= 20)
    for worker in list(service.workers):
        worker.kill()  # SIGKILL: the worker and its pool child die mid-step
        service.workers.remove(worker)
    at_kill = service.job(job["id"])
    assert at_kill["state"] == "running"
    checkpoint = at_kill["checkpoint_step"]
    service.start_worker()
    done = service.wait(job["id"])
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 2
    # continued from the checkpoint: the one recorded, or a newer one whose blob was written
    # just before the kill caught the record's update (the blob is what a resume reads) ...
    resumed = done["resumed_from_step"]
    assert resumed == checkpoint or checkpoint < resumed < 600
    assert done["steps_this_attempt"] == 600 - resumed  # ... and redid no earlier step
    assert done["progress"]["step"] == 600
