"""Reading a finished job's samples: the index (samples.json), the pixels (samples.npz), image
responses that caches may keep forever, the grid, and exports.

A job stores its images once, as one uint8 array in samples.npz (exactly the pixels the worker
scored), not as a file per sample: a job is a handful of blobs whatever its size, and PNGs are
encoded on request (tens of microseconds each). A succeeded job never changes, so its index and
pixels, and the figures derived from them (service.report, the dashboard), are cached per
process: `cached` is the one cache.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock
from typing import Any, TypeVar

import numpy as np
from fastapi import Request, Response

from models.contracts.artifacts import ArtifactName, SampleIndex, SampleRecord, SamplesArrays
from service.errors import Conflict, InvalidField, NotFound
from service.images import GRID_PAD, to_png
from service.images import grid_png as compose_grid
from service.records import JobRecord, JobState
from service.schemas import SamplePublic, TopKPublic
from service.storage import ArtifactStore, keys

T = TypeVar("T")
_CACHE_SIZE = 64
MAX_GRID_PIXELS = 32_000_000
"""The largest grid.png (about 130 MB of RGB pixels in memory while it is drawn)."""
_cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
_lock = Lock()


def cached(job: JobRecord, name: str, build: Callable[[], T]) -> T:
    """`build()` once per succeeded job and `name` (its files never change); an unfinished
    job's figures are never cached."""
    if job.state != JobState.SUCCEEDED:
        return build()
    key = (job.id, name)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            value: T = _cache[key]
            return value
    value = build()
    with _lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def forget(job_id: str) -> None:
    with _lock:
        for key in [k for k in _cache if k[0] == job_id]:
            del _cache[key]


def require_succeeded(job: JobRecord) -> None:
    if job.state != JobState.SUCCEEDED:
        raise Conflict(
            f"job {job.id} is {job.state}: samples exist once it has succeeded",
            headers={"Retry-After": "5"} if job.state in ("queued", "running") else None,
        )


def artifact(artifacts: ArtifactStore, job: JobRecord, name: ArtifactName) -> bytes:
    """One of the job's files as stored by the worker."""
    return artifacts.get(keys.job_artifact(job.tenant, job.id, name))


def sample_index(artifacts: ArtifactStore, job: JobRecord) -> list[SampleRecord]:
    """The job's samples.json: one record per sample (target, predicted, confidence, top_k)."""
    require_succeeded(job)
    return cached(
        job,
        "index",
        lambda: SampleIndex.validate_json(artifact(artifacts, job, ArtifactName.SAMPLES_JSON)),
    )


def pixels(artifacts: ArtifactStore, job: JobRecord) -> np.ndarray:
    """Every sample's pixels, (n, c, h, w) uint8, from samples.npz."""
    require_succeeded(job)
    return cached(
        job,
        "pixels",
        lambda: SamplesArrays.from_npz(artifact(artifacts, job, ArtifactName.SAMPLES_NPZ)).x,
    )


def to_public(job: JobRecord, record: SampleRecord) -> SamplePublic:
    names = job.class_names
    return SamplePublic(
        index=record.index,
        target=record.target,
        target_name=names[record.target],
        predicted=record.predicted,
        predicted_name=names[record.predicted],
        confidence=record.confidence,
        top_k=[
            TopKPublic(class_index=c, class_name=names[c], probability=p) for c, p in record.top_k
        ],
        image_url=f"/inversions/{job.id}/samples/{record.index}.png",
    )


def immutable(request: Request, data: bytes, media_type: str) -> Response:
    """A response for content that never changes: strong ETag, cached forever, 304 on match."""
    etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def sample_png(artifacts: ArtifactStore, job: JobRecord, index: int) -> bytes:
    images = pixels(artifacts, job)
    if not 0 <= index < len(images):
        raise NotFound(f"job {job.id} has no sample {index} (it has {len(images)})")
    return to_png(images[index])


def class_records(artifacts: ArtifactStore, job: JobRecord, cls: int) -> list[SampleRecord]:
    """The samples of one class, in index order."""
    if cls not in job.params.classes:
        raise NotFound(f"job {job.id} has no samples of class {cls}")
    return cached(
        job, f"class-{cls}", lambda: [r for r in sample_index(artifacts, job) if r.target == cls]
    )


def grid_png(
    artifacts: ArtifactStore, job: JobRecord, classes: list[int] | None, per_class: int
) -> bytes:
    """The samples in a grid: one row per class (the first `per_class` of each), on white.
    Refused (422) when it would exceed MAX_GRID_PIXELS, with the request that would fit."""
    wanted = job.params.classes if classes is None else classes
    columns = min(per_class, job.params.samples_per_class)
    _, height, width = job.input_shape
    row_pixels = (height + GRID_PAD) * len(wanted)
    size = (columns * (width + GRID_PAD) + GRID_PAD) * (row_pixels + GRID_PAD)
    if size > MAX_GRID_PIXELS:
        fits = max(1, MAX_GRID_PIXELS // ((width + GRID_PAD) * (row_pixels + GRID_PAD)))
        raise InvalidField(
            f"a grid of {len(wanted)} classes × {columns} samples of {height}×{width} would be "
            f"{size / 1e6:.0f} megapixels (at most {MAX_GRID_PIXELS / 1e6:.0f}): ask for fewer "
            f"classes (?classes=0,1,2) or fewer samples per class (?per_class={fits})",
            field="per_class",
        )
    images = pixels(artifacts, job)
    rows = [[images[r.index] for r in class_records(artifacts, job, c)[:columns]] for c in wanted]
    return compose_grid(rows)


def samples_zip(artifacts: ArtifactStore, job: JobRecord) -> bytes:
    """Every sample as PNG, with samples.json and metrics.json."""
    records = sample_index(artifacts, job)
    images = pixels(artifacts, job)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for record in records:
            archive.writestr(f"samples/{record.index:06d}.png", to_png(images[record.index]))
        archive.writestr("samples.json", artifact(artifacts, job, ArtifactName.SAMPLES_JSON))
        archive.writestr("metrics.json", artifact(artifacts, job, ArtifactName.METRICS_JSON))
    return out.getvalue()


def samples_npz(artifacts: ArtifactStore, job: JobRecord) -> bytes:
    require_succeeded(job)
    return artifact(artifacts, job, ArtifactName.SAMPLES_NPZ)


def reject_class_dataset(artifacts: ArtifactStore, job: JobRecord) -> bytes:
    """The counterfeits as a labelled "reject class" training set: every image gets label K (one
    past the classifier's classes), so a team can retrain with a garbage class."""
    x = pixels(artifacts, job)
    targets = np.array([r.target for r in sample_index(artifacts, job)], dtype=np.int64)
    reject = len(job.class_names)
    out = io.BytesIO()
    np.savez_compressed(
        out,
        x=x,
        y=np.full(len(x), reject, dtype=np.int64),
        counterfeit_of=targets,
        class_names=np.array([*job.class_names, "reject"]),
    )
    return out.getvalue()
