"""A whole job with its blobs in an S3-compatible bucket (moto's server, in its own process):
the API and a real worker share no folder, only the bucket."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.exports import Manifest
from service.housekeeping import collect_garbage
from service.settings import ServiceSettings
from service.storage import Stores, open_stores
from tests.e2e.conftest import SHAPE, Service, running_service, worker_env


@pytest.fixture
def s3_service(tmp_path: Path, s3_settings: dict[str, str]) -> Iterator[Service]:
    env = worker_env(tmp_path / "data", None) | s3_settings
    settings = ServiceSettings(
        data_dir=tmp_path / "data",
        **{k.removeprefix("C3_").lower(): v for k, v in s3_settings.items()},
    )
    with running_service(settings, env, tmp_path, {}) as svc:
        yield svc


def stores_of(service: Service, **settings: str | int) -> Stores:
    fields = {k.removeprefix("C3_").lower(): v for k, v in service.env.items()}
    return open_stores(ServiceSettings(**(fields | settings)))


def test_a_job_with_its_blobs_in_s3(s3_service: Service) -> None:
    classifier = s3_service.upload_classifier()  # the worker validates it from the bucket
    dataset = s3_service.upload_reference()
    job = s3_service.start_job(
        classifier_id=classifier["id"], dataset_id=dataset["id"], samples_per_class=4,
        steps=30, seed=3,
    )  # fmt: skip
    done = s3_service.wait(job["id"])
    assert done["state"] == "succeeded", done
    id = done["id"]
    assert not (s3_service.workdir / "data" / "blobs").exists()  # nothing on a local folder

    stores = stores_of(s3_service)
    blobs = stores.artifacts
    prefix = f"tenants/local/jobs/{id}"
    manifest = Manifest.model_validate_json(blobs.get(f"{prefix}/files.json"))
    assert {"samples.zip", "samples.npz", "index.npz"} <= set(manifest.files)

    whole = s3_service.request("GET", f"/inversions/{id}/samples.npz")
    assert whole.status_code == 200
    assert np.load(io.BytesIO(whole.content))["x"].shape == (40, *SHAPE)
    part = s3_service.request(
        "GET", f"/inversions/{id}/samples.npz", headers={"Range": "bytes=100-199"}
    )
    assert (part.status_code, part.content) == (206, whole.content[100:200])
    page = s3_service.request("GET", f"/inversions/{id}/samples?limit=5").json()
    assert len(page["data"]) == 5  # read by range from the bucket
    assert s3_service.request("GET", page["data"][0]["image_url"]).status_code == 200

    # Large downloads redirect to the bucket: the bytes bypass the API.
    settings = ServiceSettings(
        **{k.removeprefix("C3_").lower(): v for k, v in s3_service.env.items()},
        s3_presign_min_bytes=manifest.files["samples.zip"].bytes,
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as api:
        moved = api.get(f"/inversions/{id}/samples.zip", follow_redirects=False)
        assert moved.status_code == 307
        assert moved.headers["cache-control"] == "no-store"
        fetched = httpx.get(moved.headers["location"])
        assert fetched.status_code == 200
        assert len(fetched.content) == manifest.files["samples.zip"].bytes
        assert fetched.headers["content-type"] == "application/zip"
        assert manifest.files["metrics.json"].bytes < manifest.files["samples.zip"].bytes
        small = api.get(f"/inversions/{id}/metrics.json", follow_redirects=False)
        assert small.status_code == 200  # below the threshold: streamed by the API

    # An orphaned blob (no record owns it) is collected; the job's are kept.
    orphan = "tenants/local/jobs/job-gone/samples.npz"
    blobs.put(orphan, b"left behind")
    removed = collect_garbage(stores, grace=0, clock=lambda: time.time() + 60)
    assert removed == [orphan]
    assert blobs.exists(f"{prefix}/samples.npz")

    assert s3_service.request("DELETE", f"/inversions/{id}").status_code == 204
    assert blobs.list(prefix) == []
    stores.close()
