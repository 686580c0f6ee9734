"""A finished job's read files, built once: the sample table (index.npz), the PNG archive
(samples.zip), the reject-class training set, and a manifest (files.json) of every file's size
and SHA-256, whose digests are the downloads' ETags.

The worker builds them before it marks a job succeeded; a job that finished before this
existed gets them the first time it is read. Every file is written from blocks of rows and
stored by streaming, so neither the worker nor the API ever holds a job's pixels whole, and a
download is a file read, whatever the job's size.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydantic import BaseModel

from models.contracts.artifacts import ArtifactName, SampleIndex, SamplesArrays
from models.contracts.npz import NpzWriter, StoredArray, locate
from service.images import to_png
from service.records import JobRecord
from service.sample_table import SampleTable
from service.storage import ArtifactStore, keys
from service.storage.keys import JobFile

BLOCK_ROWS = 1024
"""Samples read, encoded or copied at a time while building."""
CHUNK_BYTES = 1024 * 1024

Progress = Callable[[int, int], None]
"""Called with (samples done, samples in all) while the archive is built."""


class StoredFile(BaseModel):
    bytes: int
    sha256: str

    @property
    def etag(self) -> str:
        return f'"{self.sha256[:32]}"'


class Manifest(BaseModel):
    """files.json: every file a succeeded job has, by name. Written last: its presence says
    the job's read files are complete."""

    files: dict[str, StoredFile]


def job_key(job: JobRecord, name: ArtifactName | JobFile) -> str:
    return keys.job_artifact(job.tenant, job.id, name)


def file_chunks(file: BinaryIO, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    while chunk := file.read(size):
        yield chunk


def _hashed(chunks: Iterator[bytes], digest: Any) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _put_file(artifacts: ArtifactStore, key: str, path: Path) -> StoredFile:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        size = artifacts.put_stream(key, _hashed(file_chunks(f), digest))
    return StoredFile(bytes=size, sha256=digest.hexdigest())


def _put(artifacts: ArtifactStore, key: str, data: bytes) -> StoredFile:
    artifacts.put(key, data)
    return StoredFile(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def _described(artifacts: ArtifactStore, key: str) -> StoredFile:
    digest = hashlib.sha256()
    with artifacts.open(key) as f:
        size = sum(len(chunk) for chunk in _hashed(file_chunks(f), digest))
    return StoredFile(bytes=size, sha256=digest.hexdigest())


# --- pixels ------------------------------------------------------------------------------


def pixel_layout(artifacts: ArtifactStore, job: JobRecord) -> StoredArray:
    """Where samples.npz keeps its pixels. An archive written before pixels were stored
    uncompressed is rewritten once (same arrays), so that every job reads by range."""
    key = job_key(job, ArtifactName.SAMPLES_NPZ)
    with artifacts.open(key) as f:
        layout = locate(f, "x")
    if layout is None:
        artifacts.put(key, SamplesArrays.from_npz(artifacts.get(key)).to_npz())
        with artifacts.open(key) as f:
            layout = locate(f, "x")
    if layout is None:
        raise ValueError(f"job {job.id}: samples.npz has no readable pixels")
    return layout


def read_rows(
    artifacts: ArtifactStore, job: JobRecord, layout: StoredArray, start: int, count: int
) -> np.ndarray:
    """Samples start..start+count-1, (count, C, H, W) uint8, in one range read."""
    data = artifacts.read_range(
        job_key(job, ArtifactName.SAMPLES_NPZ),
        layout.offset + start * layout.row_bytes,
        count * layout.row_bytes,
    )
    return layout.rows(data, count)


def _blocks(
    artifacts: ArtifactStore, job: JobRecord, layout: StoredArray
) -> Iterator[tuple[int, np.ndarray]]:
    count = layout.shape[0]
    for start in range(0, count, BLOCK_ROWS):
        yield start, read_rows(artifacts, job, layout, start, min(BLOCK_ROWS, count - start))


# --- building ----------------------------------------------------------------------------


def _samples_zip(
    artifacts: ArtifactStore, job: JobRecord, layout: StoredArray, path: Path,
    progress: Progress | None,
) -> None:  # fmt: skip
    """Every sample as PNG, with samples.json and metrics.json."""
    count = layout.shape[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for start, block in _blocks(artifacts, job, layout):
            for offset, pixels in enumerate(block):
                archive.writestr(f"samples/{start + offset:06d}.png", to_png(pixels))
            if progress:
                progress(start + len(block), count)
        for name in (ArtifactName.SAMPLES_JSON, ArtifactName.METRICS_JSON):
            with (
                artifacts.open(job_key(job, name)) as source,
                archive.open(name.value, "w", force_zip64=True) as entry,
            ):
                for chunk in file_chunks(source):
                    entry.write(chunk)


def _reject_class(
    artifacts: ArtifactStore, job: JobRecord, layout: StoredArray, table: SampleTable, path: Path
) -> None:
    """The counterfeits as a labelled "reject class" training set: every image gets label K
    (one past the classifier's classes), so a team can retrain with a garbage class."""
    npz = NpzWriter(path)
    x = npz.stream("x", np.dtype(np.uint8), layout.shape)
    for _, block in _blocks(artifacts, job, layout):
        x.write(block)
    x.close()
    npz.array("y", np.full(len(table), len(job.class_names), dtype=np.int64))
    npz.array("counterfeit_of", table.targets.astype(np.int64))
    npz.array("class_names", np.array([*job.class_names, "reject"]))
    npz.close()


def build(artifacts: ArtifactStore, job: JobRecord, progress: Progress | None = None) -> Manifest:
    """Build the job's read files from its samples and store them, the manifest last."""
    layout = pixel_layout(artifacts, job)
    records = SampleIndex.validate_json(artifacts.get(job_key(job, ArtifactName.SAMPLES_JSON)))
    table = SampleTable.of(records, len(job.class_names))
    if len(table) != layout.shape[0]:
        raise ValueError(f"job {job.id}: {len(table)} records for {layout.shape[0]} samples")
    files = {JobFile.INDEX.value: _put(artifacts, job_key(job, JobFile.INDEX), table.to_npz())}
    with tempfile.TemporaryDirectory(prefix="c3-exports-") as folder:
        for name, write in (
            (JobFile.SAMPLES_ZIP, lambda p: _samples_zip(artifacts, job, layout, p, progress)),
            (JobFile.REJECT_CLASS, lambda p: _reject_class(artifacts, job, layout, table, p)),
        ):
            path = Path(folder) / name.value
            write(path)
            files[name.value] = _put_file(artifacts, job_key(job, name), path)
            path.unlink()
    for stored in ArtifactName:
        if artifacts.exists(job_key(job, stored)):
            files[stored.value] = _described(artifacts, job_key(job, stored))
    manifest = Manifest(files=files)
    artifacts.put(job_key(job, JobFile.MANIFEST), manifest.model_dump_json(indent=1).encode())
    return manifest
