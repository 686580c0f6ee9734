"""Reads of a finished job that cost a page: the sample table, range reads of the pixels,
cursor paging, stored exports streamed with ETags and byte ranges, the byte-bounded cache, and
jobs left by version 1 (compressed pixels, no exports) upgraded on first read."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.contracts.artifacts import ArtifactName, SampleIndex, SampleRecord, SamplesArrays
from models.contracts.npz import NpzWriter, locate
from service import exports
from service.app import create_app
from service.read_cache import ReadCache
from service.records import JobRecord, JobState
from service.sample_table import SampleTable
from service.settings import ServiceSettings
from service.storage import Stores, keys
from service.storage.keys import JobFile
from tests import records
from tests.service.test_uploads import problem


def stored(stores: Stores, job: JobRecord, name: ArtifactName | JobFile) -> bytes:
    return stores.artifacts.get(keys.job_artifact(job.tenant, job.id, name))


def index_of(stores: Stores, job: JobRecord) -> list[SampleRecord]:
    return SampleIndex.validate_json(stored(stores, job, ArtifactName.SAMPLES_JSON))


# --- the file formats ----------------------------------------------------------------------


def test_a_streamed_npz_is_read_by_numpy_and_by_range(tmp_path: object) -> None:
    path = tmp_path / "a.npz"  # type: ignore[operator]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (37, 3, 5, 4), dtype=np.uint8)
    npz = NpzWriter(path)
    rows = npz.stream("x", np.dtype(np.uint8), x.shape)
    for start in range(0, 37, 10):
        rows.write(x[start : start + 10])
    rows.close()
    npz.array("labels", np.arange(37))
    npz.close()
    with np.load(path) as loaded:
        assert np.array_equal(loaded["x"], x)
        assert np.array_equal(loaded["labels"], np.arange(37))
    with path.open("rb") as f:
        layout = locate(f, "x")
        assert layout is not None
        assert layout.shape == x.shape
        f.seek(layout.offset + 20 * layout.row_bytes)
        assert np.array_equal(layout.rows(f.read(3 * layout.row_bytes), 3), x[20:23])


def test_a_short_stream_is_an_error(tmp_path: object) -> None:
    npz = NpzWriter(tmp_path / "b.npz")  # type: ignore[operator]
    rows = npz.stream("x", np.dtype(np.uint8), (4, 2))
    rows.write(np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="3 rows written, 4 announced"):
        rows.close()
    with pytest.raises(ValueError, match="rows of shape"):
        rows.write(np.zeros((1, 3), np.uint8))


def test_a_compressed_member_cannot_be_read_by_range() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((4, 4), np.uint8))
    buffer.seek(0)
    assert locate(buffer, "x") is None


def random_records(n: int, classes: int, seed: int = 0) -> list[SampleRecord]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    return [
        SampleRecord(index=i, target=int(t), predicted=int(rng.integers(0, classes)),
                     confidence=float(np.float32(rng.random())),
                     top_k=[(int(t), 0.75), ((int(t) + 1) % classes, 0.25)])
        for i, t in enumerate(targets)
    ]  # fmt: skip


def test_the_table_selects_what_a_scan_of_the_records_would() -> None:
    records_ = random_records(500, 7)
    table = SampleTable.from_npz(SampleTable.of(records_, 7).to_npz())
    assert [table.record(i) for i in range(500)] == records_
    for cls in (None, 0, 3, 6):
        for low, high in ((0.0, 1.0), (0.25, 0.5), (0.9, 0.9)):
            expected = [
                r.index for r in records_
                if (cls is None or r.target == cls) and low <= r.confidence <= high
            ]  # fmt: skip
            assert table.select(cls, low, high).tolist() == expected
    assert table.of_class(99).tolist() == []
    assert table.max_probability.tolist() == [0.75] * 500


def test_a_table_refuses_records_out_of_order() -> None:
    shuffled = random_records(3, 2)[::-1]
    with pytest.raises(ValueError, match="sample 0 is recorded as index 2"):
        SampleTable.of(shuffled, 2)


def test_the_cache_is_bounded_by_bytes() -> None:
    cache = ReadCache(budget=1000)
    job = records.job_record(records.classifier_record())
    job.state = JobState.SUCCEEDED
    builds: list[str] = []

    def build(name: str, size: int) -> bytes:
        builds.append(name)
        return b"x" * size

    for name in ("a", "b", "c"):
        cache.get(job, name, lambda name=name: build(name, 300))  # type: ignore[misc]
    assert cache.used <= 1000
    cache.get(job, "a", lambda: build("a", 300))  # kept: no rebuild
    cache.get(job, "d", lambda: build("d", 300))  # evicts the least recently used: b
    cache.get(job, "b", lambda: build("b", 300))
    assert builds == ["a", "b", "c", "d", "b"]
    cache.get(job, "huge", lambda: build("huge", 5000))
    cache.get(job, "huge", lambda: build("huge", 5000))
    assert builds[-2:] == ["huge", "huge"]
    assert cache.used <= 1000
    job.state = JobState.RUNNING
    cache.get(job, "a", lambda: build("running", 1))
    assert builds[-1] == "running"
    cache.forget(job.id)
    assert cache.used == 0


# --- reading through the API --------------------------------------------------------------


def test_cursor_paging_returns_every_matching_sample_once_in_order(
    api: TestClient, stores: Stores
) -> None:
    job = records.seed_job(stores, records.seed_classifier(stores, side=8), per_class=23)
    index = index_of(stores, job)
    for params, keep in (
        ({}, lambda r: True),
        ({"class": 4}, lambda r: r.target == 4),
        ({"min_confidence": 0.99}, lambda r: r.confidence >= 0.99),
        ({"class": 2, "max_confidence": 0.9}, lambda r: r.target == 2 and r.confidence <= 0.9),
    ):
        url: str | None = f"/inversions/{job.id}/samples"
        seen, pages = [], 0
        query: dict[str, object] = {**params, "limit": 17}
        while url:
            page = api.get(url, params=query or None).json()
            query = {}  # the next link carries the query
            assert page["count"] == sum(map(keep, index))
            seen += [s["index"] for s in page["data"]]
            url, pages = page["next"], pages + 1
        assert seen == [r.index for r in index if keep(r)], params
        assert pages == max(1, -(-len(seen) // 17))


def test_a_sample_reads_as_its_record_and_its_pixels(api: TestClient, stores: Stores) -> None:
    job = records.seed_job(stores, records.seed_classifier(stores, side=8), per_class=5)
    x = SamplesArrays.from_npz(stored(stores, job, ArtifactName.SAMPLES_NPZ)).x
    page = api.get(f"/inversions/{job.id}/samples", params={"offset": 12, "limit": 3}).json()
    assert [s["index"] for s in page["data"]] == [12, 13, 14]
    assert page["data"][0] == {
        **page["data"][0],
        "target": index_of(stores, job)[12].target,
        "image_url": f"/inversions/{job.id}/samples/12.png",
    }
    png = api.get(f"/inversions/{job.id}/samples/13.png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), x[13, 0])
    assert problem(api.get(f"/inversions/{job.id}/samples/50.png"), 404)


def test_downloads_are_stored_files_with_etags_and_ranges(api: TestClient, stores: Stores) -> None:
    job = records.seed_job(stores, records.seed_classifier(stores, side=8), per_class=4)
    url = f"/inversions/{job.id}/samples.npz"
    whole = api.get(url)
    assert whole.content == stored(stores, job, ArtifactName.SAMPLES_NPZ)
    assert whole.headers["accept-ranges"] == "bytes"
    etag = whole.headers["etag"]
    assert api.get(url, headers={"If-None-Match": etag}).status_code == 304
    part = api.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    tail = api.get(url, headers={"Range": "bytes=-10"})
    assert tail.content == whole.content[-10:]
    stale = api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200
    assert stale.content == whole.content
    outside = api.get(url, headers={"Range": f"bytes={len(whole.content)}-"})
    assert problem(outside, 416)["detail"].startswith(f"the file has {len(whole.content):,} bytes")
    assert outside.headers["content-range"] == f"bytes */{len(whole.content)}"


def test_a_local_blob_store_streams_every_download(api: TestClient, stores: Stores) -> None:
    """Presigned redirects need a store that serves blobs itself: a folder does not."""
    job = records.seed_job(stores, records.seed_classifier(stores, side=8), per_class=4)
    settings = ServiceSettings(s3_presign_min_bytes=1)
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as other:
        got = other.get(f"/inversions/{job.id}/samples.zip", follow_redirects=False)
    assert got.status_code == 200
    assert got.content == stored(stores, job, JobFile.SAMPLES_ZIP)


def test_the_exports_hold_every_sample(api: TestClient, stores: Stores) -> None:
    job = records.seed_job(stores, records.seed_classifier(stores, side=8), per_class=6)
    x = SamplesArrays.from_npz(stored(stores, job, ArtifactName.SAMPLES_NPZ)).x
    archive = zipfile.ZipFile(io.BytesIO(api.get(f"/inversions/{job.id}/samples.zip").content))
    pngs = sorted(n for n in archive.namelist() if n.endswith(".png"))
    assert len(pngs) == len(x)
    assert {"samples.json", "metrics.json"} <= set(archive.namelist())
    assert np.array_equal(np.asarray(Image.open(archive.open(pngs[-1]))), x[-1, 0])
    dataset = api.get(f"/inversions/{job.id}/dataset")
    assert dataset.headers["content-disposition"].endswith('-reject-class.npz"')
    with np.load(io.BytesIO(dataset.content)) as npz:
        assert np.array_equal(npz["x"], x)
        assert set(npz["y"].tolist()) == {len(job.class_names)}
        assert npz["class_names"].tolist()[-1] == "reject"
        assert npz["counterfeit_of"].tolist() == [r.target for r in index_of(stores, job)]


def test_a_version_1_job_gets_its_read_files_on_first_read(api: TestClient, stores: Stores) -> None:
    job = records.seed_job(
        stores, records.seed_classifier(stores, side=8), per_class=4, legacy=True
    )
    before = SamplesArrays.from_npz(stored(stores, job, ArtifactName.SAMPLES_NPZ))
    assert not stores.artifacts.exists(keys.job_artifact(job.tenant, job.id, JobFile.MANIFEST))
    page = api.get(f"/inversions/{job.id}/samples", params={"class": 1}).json()
    assert page["count"] == 4
    manifest = exports.Manifest.model_validate_json(stored(stores, job, JobFile.MANIFEST))
    assert set(manifest.files) >= {"samples.zip", "reject-class.npz", "index.npz", "samples.npz"}
    after = SamplesArrays.from_npz(stored(stores, job, ArtifactName.SAMPLES_NPZ))
    assert np.array_equal(before.x, after.x)
    assert np.array_equal(before.targets, after.targets)
    png = api.get(f"/inversions/{job.id}/samples/5.png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), before.x[5, 0])


def test_reads_of_an_unfinished_job_say_when_to_come_back(api: TestClient, stores: Stores) -> None:
    job = records.seed_job(stores, records.seed_classifier(stores, side=8), state=JobState.RUNNING)
    for path in ("samples", "samples.zip", "samples.npz", "dataset", "samples/0.png"):
        response = api.get(f"/inversions/{job.id}/{path}")
        assert problem(response, 409)["detail"].endswith("samples exist once it has succeeded")
        assert response.headers["retry-after"] == "5"
