"""The Python client (service.client), sync and async, against a live `c3 serve` (real processes,
real HTTP): uploads with progress and the wait for validation, a job followed over SSE, every
sample by the `next` links, downloads to files, problem+json as typed errors, and retries that
honour `Retry-After`."""

from __future__ import annotations

import asyncio
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.client import (
    AsyncClient,
    Client,
    ConflictError,
    ConnectionFailed,
    InvalidInputError,
    NotFoundError,
    RetryPolicy,
    TooManyRequestsError,
    UnauthorizedError,
    UploadRejected,
)
from service.records import ProgressEvent, StateEvent
from service.report import ReportPublic
from tests import factories
from tests.conftest import LiveApi, LiveService, clean_env, free_port

SIDE = 8
CLASS_NAMES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return factories.upload_files(tmp_path_factory.mktemp("uploads"), SIDE)


@pytest.fixture
def client(live_service: LiveService) -> Any:
    with Client(live_service.url, live_service.key) as c:
        yield c


@pytest.fixture(scope="module")
def audited(live_service: LiveService, files: tuple[Path, Path]) -> dict[str, Any]:
    """A classifier and a reference set uploaded, and a job followed to its end."""
    model, reference = files
    progress: list[tuple[int, int]] = []
    events: list[Any] = []
    with Client(live_service.url, live_service.key) as c:
        classifier = c.upload_classifier(
            model, name="client-digits", architecture="mlp", input_shape=(1, SIDE, SIDE),
            class_names=CLASS_NAMES, tags=["client", "test"],
            on_progress=lambda done, total: progress.append((done, total)),
        )  # fmt: skip
        dataset = c.upload_dataset(reference, name="client-held-out")
        job = c.start_inversion(
            classifier.id, dataset_id=dataset.id, samples_per_class=23, steps=30, seed=3
        )
        done = c.wait_for_inversion(job.id, on_event=events.append, timeout=120)
    return {
        "classifier": classifier, "dataset": dataset, "job": done, "events": events,
        "progress": progress,
    }  # fmt: skip


def test_upload_reports_progress_and_waits_for_the_verdict(
    audited: dict[str, Any], files: tuple[Path, Path]
) -> None:
    classifier, progress = audited["classifier"], audited["progress"]
    assert classifier.status == "ready"
    assert classifier.num_classes == 10
    assert classifier.tags == ["client", "test"]
    size = files[0].stat().st_size
    assert progress[-1] == (size, size)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert audited["dataset"].status == "ready"
    assert audited["dataset"].count == 100


def test_a_job_is_followed_over_server_sent_events(audited: dict[str, Any]) -> None:
    job, events = audited["job"], audited["events"]
    assert job.state == "succeeded"
    states = [e.state for e in events if isinstance(e, StateEvent)]
    assert states[0] in ("queued", "running")
    assert states[-1] == "succeeded"
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert progress, "no progress event"
    assert job.metrics is not None
    assert job.metrics.confident_share is not None


def test_every_sample_by_next_links_and_typed_figures(
    client: Client, audited: dict[str, Any]
) -> None:
    job = audited["job"]
    samples = list(client.iter_samples(job.id, limit=7))
    assert [s.index for s in samples] == list(range(230))
    assert [s.index for s in client.iter_samples(job.id, class_=4, limit=5)] == list(range(92, 115))
    metrics = client.metrics(job.id)
    assert metrics.overall.count == 230
    assert metrics.overall.confident_share == job.metrics.confident_share
    report = client.report(job.id)
    assert isinstance(report, ReportPublic)
    assert report.ood is not None  # the reference set gave the detectors their data
    ids = [c.id for c in client.iter_classifiers(tag="client", limit=1)]
    assert audited["classifier"].id in ids
    assert job.id in [j.id for j in client.iter_inversions(classifier_id=job.classifier_id)]


def test_downloads_are_streamed_to_files(
    client: Client, audited: dict[str, Any], tmp_path: Path
) -> None:
    job = audited["job"]
    seen: list[tuple[int, int]] = []
    archive = client.download(
        job.id, "zip", tmp_path / "out/samples.zip", on_progress=lambda d, t: seen.append((d, t))
    )
    with zipfile.ZipFile(archive) as z:
        assert sum(n.endswith(".png") for n in z.namelist()) == 230
    assert seen[-1][0] == archive.stat().st_size
    with np.load(client.download(job.id, "npz", tmp_path / "samples.npz")) as npz:
        assert npz["x"].shape == (230, 1, SIDE, SIDE)
    with np.load(client.download(job.id, "reject-dataset", tmp_path / "reject.npz")) as npz:
        assert set(npz["y"].tolist()) == {10}  # one past the classifier's classes
    report = ReportPublic.model_validate_json(
        client.download(job.id, "report-json", tmp_path / "report.json").read_bytes()
    )
    assert report.job.id == job.id
    html = client.download(job.id, "report-html", tmp_path / "report.html").read_text()
    assert "<html" in html
    grid = client.download(job.id, "grid", tmp_path / "grid.png", per_class=4)
    assert Image.open(grid).size[0] == 4 * (SIDE + 2) + 2
    model = client.download(audited["classifier"].id, "model", tmp_path / "model.safetensors")
    assert model.stat().st_size > 1000
    assert not list(tmp_path.rglob("*.part"))  # nothing half-written left behind


def test_problems_are_raised_as_typed_errors(
    client: Client, audited: dict[str, Any], live_service: LiveService, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.get_inversion("job_nope")
    assert missing.value.problem.status == 404
    assert "job_nope" in missing.value.problem.detail
    with pytest.raises(InvalidInputError) as invalid:
        client.start_inversion(audited["classifier"].id, classes=[3, 12])
    assert invalid.value.problem.field == "classes"
    assert "out of range" in str(invalid.value)
    with pytest.raises(ConflictError, match="already finished"):
        client.cancel_inversion(audited["job"].id)
    with Client(live_service.url, "c3k_wrong") as stranger, pytest.raises(UnauthorizedError):
        stranger.list_classifiers()
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(UploadRejected) as rejected:
        client.upload_classifier(garbage, input_shape="1,8,8", class_names=CLASS_NAMES)
    assert rejected.value.problem.field == "file"
    assert rejected.value.problem.model_extra["id"].startswith("clf_")
    nowhere = Client(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(backoff=0.01))
    with nowhere, pytest.raises(ConnectionFailed, match="cannot reach"):
        nowhere.health()


def test_the_async_client_does_the_same(live_service: LiveService, audited: dict[str, Any]) -> None:
    job = audited["job"]

    async def use() -> tuple[Any, ...]:
        async with AsyncClient(live_service.url, live_service.key) as c:
            follow_up = await c.sample_more(job.id, samples_per_class=3, seed=1)
            events = [e async for e in c.events(follow_up.id)]
            finished = await c.get_inversion(follow_up.id)
            samples = [s async for s in c.iter_samples(follow_up.id, limit=4)]
            with pytest.raises(NotFoundError):
                await c.get_classifier("clf_nope")
            return events, finished, samples, await c.health()

    events, finished, samples, health = asyncio.run(use())
    assert isinstance(events[-1], StateEvent)
    assert events[-1].state == finished.state == "succeeded"
    assert [s.index for s in samples] == list(range(30))
    assert health.status == "ok"


def test_retries_honour_retry_after(tmp_path: Path, live_service: LiveService) -> None:
    """A quota of one active job, refused with `Retry-After: 1`: the client waits and tries
    again, and gets through once the first job is cancelled; past `max_retry_after` it gives
    up at once with the wait the service asked for."""
    from service.records import ClassifierRecord
    from service.settings import ServiceSettings
    from service.storage import open_stores
    from tests import records

    data = tmp_path / "data"
    stores = open_stores(ServiceSettings(data_dir=data))
    try:
        classifier: ClassifierRecord = records.seed_classifier(stores, side=8)
    finally:
        stores.close()
    env = clean_env(C3_DATA_DIR=str(data), C3_QUOTA_ACTIVE_JOBS="1", C3_QUOTA_RETRY_SECONDS="1")
    api = LiveApi(env).start()  # no worker: jobs stay queued
    try:
        with Client(api.url, retry=RetryPolicy(attempts=6)) as c:
            first = c.start_inversion(classifier.id, samples_per_class=1)
            impatient = Client(api.url, retry=RetryPolicy(max_retry_after=0.5))
            with impatient, pytest.raises(TooManyRequestsError) as refused:
                impatient.start_inversion(classifier.id, samples_per_class=1)
            assert refused.value.retry_after == 1
            threading.Timer(1.5, lambda: Client(api.url).cancel_inversion(first.id)).start()
            started = time.monotonic()
            second = c.start_inversion(classifier.id, samples_per_class=1)
            assert second.id != first.id
            assert time.monotonic() - started >= 1.0  # it waited as asked, then got through
    finally:
        api.stop()
