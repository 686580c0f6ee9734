"""Reading a finished job's samples: its sample table, pixels by range, images that caches may
keep forever, and the grid.

A job stores its images once, as one uint8 array in samples.npz (exactly the pixels the worker
scored), not as a file per sample: a job is a handful of blobs whatever its size, and PNGs are
encoded on request (tens of microseconds each). Reads go through the sample table and range
reads of the pixels (service.exports), so a page of a 100,000-sample job costs a page.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from models.contracts.artifacts import ArtifactName, SampleRecord
from models.contracts.npz import StoredArray
from service import exports
from service.errors import Conflict, InvalidField, NotFound
from service.images import GridLayout, to_png
from service.images import grid_png as compose_grid
from service.read_cache import cache
from service.records import JobRecord, JobState
from service.sample_table import SampleTable
from service.schemas import SamplePublic, TopKPublic
from service.storage import ArtifactStore, keys
from service.storage.keys import JobFile

MAX_GRID_PIXELS = 32_000_000
"""The largest grid.png (about 130 MB of RGB pixels in memory while it is drawn)."""
GRID_PER_CLASS = 100
"""Samples per class in grid.png when the request does not say (fewer when they would not fit)."""


def require_succeeded(job: JobRecord) -> None:
    if job.state != JobState.SUCCEEDED:
        raise Conflict(
            f"job {job.id} is {job.state}: samples exist once it has succeeded",
            headers={"Retry-After": "5"} if job.state in ("queued", "running") else None,
        )


def artifact(artifacts: ArtifactStore, job: JobRecord, name: ArtifactName) -> bytes:
    """One of the job's (small) files as stored by the worker."""
    return artifacts.get(keys.job_artifact(job.tenant, job.id, name))


_building: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_building_lock = threading.Lock()


def _job_lock(job_id: str) -> threading.Lock:
    with _building_lock:
        lock = _building.get(job_id)
        if lock is None:
            lock = threading.Lock()
            _building[job_id] = lock
        return lock


def manifest(artifacts: ArtifactStore, job: JobRecord) -> exports.Manifest:
    """The succeeded job's manifest, building its read files first if it has none (a job that
    finished before they existed); one build per job at a time in this process."""
    require_succeeded(job)

    def load() -> exports.Manifest:
        key = exports.job_key(job, JobFile.MANIFEST)
        with _job_lock(job.id):
            if not artifacts.exists(key):
                return exports.build(artifacts, job)
            return exports.Manifest.model_validate_json(artifacts.get(key))

    return cache.get(job, "manifest", load)


def table(artifacts: ArtifactStore, job: JobRecord) -> SampleTable:
    """The job's samples as columns (target, prediction, confidence, top-k, by class)."""
    manifest(artifacts, job)
    return cache.get(
        job,
        "table",
        lambda: SampleTable.from_npz(artifacts.get(exports.job_key(job, JobFile.INDEX))),
    )


def _layout(artifacts: ArtifactStore, job: JobRecord) -> StoredArray:
    manifest(artifacts, job)
    return cache.get(job, "layout", lambda: exports.pixel_layout(artifacts, job))


def pixels(artifacts: ArtifactStore, job: JobRecord, indices: np.ndarray) -> np.ndarray:
    """The pixels of samples `indices`, (len, C, H, W) uint8 in that order: one range read per
    run of consecutive indices (a class's samples are one run)."""
    layout = _layout(artifacts, job)
    wanted = np.unique(indices)
    out = np.empty((len(wanted), *layout.shape[1:]), dtype=np.uint8)
    breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
    for run in np.split(np.arange(len(wanted)), breaks):
        if len(run):
            first = int(wanted[run[0]])
            out[run] = exports.read_rows(artifacts, job, layout, first, len(run))
    return out[np.searchsorted(wanted, indices)]


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


def sample_png(artifacts: ArtifactStore, job: JobRecord, index: int) -> bytes:
    count = len(table(artifacts, job))
    if not 0 <= index < count:
        raise NotFound(f"job {job.id} has no sample {index} (it has {count})")
    return to_png(pixels(artifacts, job, np.array([index]))[0])


def class_indices(artifacts: ArtifactStore, job: JobRecord, cls: int) -> np.ndarray:
    """The indices of one class's samples, in index order."""
    if cls not in job.params.classes:
        raise NotFound(f"job {job.id} has no samples of class {cls}")
    return table(artifacts, job).of_class(cls)


def grid_png(
    artifacts: ArtifactStore, job: JobRecord, classes: list[int] | None, per_class: int | None
) -> bytes:
    """The samples in a grid: each class under its name, its first `per_class` samples wrapped
    at 16 a row, on white; at most MAX_GRID_PIXELS. Without `per_class`, as many as fit (up to
    GRID_PER_CLASS); a `per_class` that would not fit is refused (422) with one that would."""
    wanted = job.params.classes if classes is None else classes
    available = job.params.samples_per_class
    _, height, width = job.input_shape

    def layout(count: int) -> GridLayout:
        return GridLayout(
            classes=len(wanted), per_class=min(count, available), tile=(height, width)
        )

    fits = next((n for n in range(available, 0, -1) if layout(n).pixels <= MAX_GRID_PIXELS), 0)
    shown = min(GRID_PER_CLASS, max(fits, 1)) if per_class is None else per_class
    if shown > fits:
        too_big = layout(shown)
        fewer = f" or fewer samples per class (?per_class={fits})" if fits else ""
        raise InvalidField(
            f"a grid of {len(wanted)} classes × {too_big.per_class} samples of {height}×{width} "
            f"would be {too_big.pixels / 1e6:.0f} megapixels (at most "
            f"{MAX_GRID_PIXELS / 1e6:.0f}): ask for fewer classes (?classes=0,1,2){fewer}",
            field="per_class" if fits else "classes",
        )
    blocks = [
        list(pixels(artifacts, job, class_indices(artifacts, job, c)[:shown])) for c in wanted
    ]
    names = job.class_names
    labels = [names[c] if names[c] == str(c) else f"{c}: {names[c]}" for c in wanted]
    return compose_grid(blocks, labels=labels)
