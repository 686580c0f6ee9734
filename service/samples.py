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
import json
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock
from typing import Any, TypeVar

import numpy as np
from fastapi import Request, Response
from PIL import Image

from service.errors import Conflict, NotFound
from service.schemas import SamplePublic, TopKPublic
from service.storage import ArtifactStore, keys

T = TypeVar("T")
_CACHE_SIZE = 64
_cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
_lock = Lock()
GRID_PAD = 2


def cached(job: dict[str, Any], name: str, build: Callable[[], T]) -> T:
    """`build()` once per succeeded job and `name` (its files never change); an unfinished
    job's figures are never cached."""
    if job["state"] != "succeeded":
        return build()
    key = (job["id"], name)
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


def require_succeeded(job: dict[str, Any]) -> None:
    if job["state"] != "succeeded":
        raise Conflict(
            f"job {job['id']} is {job['state']}: samples exist once it has succeeded",
            headers={"Retry-After": "5"} if job["state"] in ("queued", "running") else None,
        )


def sample_index(artifacts: ArtifactStore, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's samples.json: one record per sample (target, predicted, confidence, top_k)."""
    require_succeeded(job)
    key = keys.job_samples_json(job["tenant"], job["id"])
    return cached(job, "index", lambda: json.loads(artifacts.get(key)))


def pixels(artifacts: ArtifactStore, job: dict[str, Any]) -> np.ndarray:
    """Every sample's pixels, (n, c, h, w) uint8, from samples.npz."""
    require_succeeded(job)

    def load() -> np.ndarray:
        data = artifacts.get(keys.job_samples_npz(job["tenant"], job["id"]))
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return np.asarray(npz["x"])

    return cached(job, "pixels", load)


def forget(job_id: str) -> None:
    with _lock:
        for key in [k for k in _cache if k[0] == job_id]:
            del _cache[key]


def to_public(job: dict[str, Any], rec: dict[str, Any]) -> SamplePublic:
    names = job["class_names"]
    return SamplePublic(
        index=rec["index"],
        target=rec["target"],
        target_name=names[rec["target"]],
        predicted=rec["predicted"],
        predicted_name=names[rec["predicted"]],
        confidence=rec["confidence"],
        top_k=[
            TopKPublic(class_index=c, class_name=names[c], probability=p) for c, p in rec["top_k"]
        ],
        image_url=f"/inversions/{job['id']}/samples/{rec['index']}.png",
    )


def immutable(request: Request, data: bytes, media_type: str) -> Response:
    """A response for content that never changes: strong ETag, cached forever, 304 on match."""
    etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def _image(array: np.ndarray) -> Image.Image:
    """(c, h, w) uint8 → a grey or RGB image."""
    return Image.fromarray(array[0] if array.shape[0] == 1 else array[:3].transpose(1, 2, 0))


def encode_png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def sample_png(artifacts: ArtifactStore, job: dict[str, Any], index: int) -> bytes:
    images = pixels(artifacts, job)
    if not 0 <= index < len(images):
        raise NotFound(f"job {job['id']} has no sample {index} (it has {len(images)})")
    return encode_png(_image(images[index]))


def grid_png(artifacts: ArtifactStore, job: dict[str, Any], classes: list[int] | None) -> bytes:
    """The samples in a grid: one row per class, samples left to right, on white."""
    records, images = sample_index(artifacts, job), pixels(artifacts, job)
    trained = job["params"]["classes"]
    wanted = trained if classes is None else classes
    missing = [c for c in wanted if c not in trained]
    if missing:
        raise NotFound(f"job {job['id']} has no samples of class {missing[0]}")
    rows = [[r["index"] for r in records if r["target"] == c] for c in wanted]
    _, channels, h, w = images.shape
    columns = max(len(r) for r in rows)
    mode = "L" if channels == 1 else "RGB"
    grid = Image.new(mode, (columns * (w + GRID_PAD) + GRID_PAD, len(rows) * (h + GRID_PAD)
                            + GRID_PAD), "white")  # fmt: skip
    for y, row in enumerate(rows):
        for x, index in enumerate(row):
            grid.paste(_image(images[index]), (GRID_PAD + x * (w + GRID_PAD),
                                               GRID_PAD + y * (h + GRID_PAD)))  # fmt: skip
    return encode_png(grid)


def samples_zip(artifacts: ArtifactStore, job: dict[str, Any]) -> bytes:
    """Every sample as PNG, with samples.json and metrics.json."""
    records = sample_index(artifacts, job)
    images = pixels(artifacts, job)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for rec in records:
            archive.writestr(
                f"samples/{rec['index']:06d}.png", encode_png(_image(images[rec["index"]]))
            )
        archive.writestr("samples.json", json.dumps(records, indent=1))
        archive.writestr(
            "metrics.json", artifacts.get(keys.job_metrics_json(job["tenant"], job["id"]))
        )
    return out.getvalue()


def samples_npz(artifacts: ArtifactStore, job: dict[str, Any]) -> bytes:
    require_succeeded(job)
    return artifacts.get(keys.job_samples_npz(job["tenant"], job["id"]))


def reject_class_dataset(artifacts: ArtifactStore, job: dict[str, Any]) -> bytes:
    """The counterfeits as a labelled "reject class" training set: every image gets label K (one
    past the classifier's classes), so a team can retrain with a garbage class."""
    x = pixels(artifacts, job)
    targets = np.array([r["target"] for r in sample_index(artifacts, job)], dtype=np.int64)
    reject = len(job["class_names"])
    out = io.BytesIO()
    np.savez_compressed(
        out,
        x=x,
        y=np.full(len(x), reject, dtype=np.int64),
        counterfeit_of=targets,
        class_names=np.array([*job["class_names"], "reject"]),
    )
    return out.getvalue()
