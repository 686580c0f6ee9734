"""Reading a finished job's samples: the index (samples.json), image responses that caches may
keep forever, the grid, and exports. A succeeded job's files never change, so its index is
cached per process."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import OrderedDict
from threading import Lock
from typing import Any

import numpy as np
from fastapi import Request, Response
from PIL import Image

from service.errors import Conflict, NotFound
from service.schemas import SamplePublic, TopKPublic
from service.storage import ArtifactNotFound, ArtifactStore, keys

_CACHE_SIZE = 32
_cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
_lock = Lock()


def require_succeeded(job: dict[str, Any]) -> None:
    if job["state"] != "succeeded":
        raise Conflict(
            f"job {job['id']} is {job['state']}: samples exist once it has succeeded",
            headers={"Retry-After": "5"} if job["state"] in ("queued", "running") else None,
        )


def sample_index(artifacts: ArtifactStore, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's samples.json: one record per sample (target, predicted, confidence, top_k)."""
    require_succeeded(job)
    with _lock:
        if job["id"] in _cache:
            _cache.move_to_end(job["id"])
            return _cache[job["id"]]
    records: list[dict[str, Any]] = json.loads(
        artifacts.get(keys.job_samples_json(job["tenant"], job["id"]))
    )
    with _lock:
        _cache[job["id"]] = records
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return records


def forget(job_id: str) -> None:
    with _lock:
        _cache.pop(job_id, None)


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


def sample_png(artifacts: ArtifactStore, job: dict[str, Any], index: int) -> bytes:
    require_succeeded(job)
    try:
        return artifacts.get(keys.job_sample_png(job["tenant"], job["id"], index))
    except ArtifactNotFound:
        raise NotFound(f"job {job['id']} has no sample {index}") from None


def grid_png(artifacts: ArtifactStore, job: dict[str, Any], classes: list[int] | None) -> bytes:
    """Rows of samples, one row per class (the worker renders each row once)."""
    require_succeeded(job)
    trained = job["params"]["classes"]
    wanted = trained if classes is None else classes
    missing = [c for c in wanted if c not in trained]
    if missing:
        raise NotFound(f"job {job['id']} has no samples of class {missing[0]}")
    rows = [
        Image.open(io.BytesIO(artifacts.get(keys.job_grid_row(job["tenant"], job["id"], c))))
        for c in wanted
    ]
    grid = Image.new(rows[0].mode, (max(r.width for r in rows), sum(r.height for r in rows)))
    top = 0
    for row in rows:
        grid.paste(row, (0, top))
        top += row.height
    out = io.BytesIO()
    grid.save(out, format="PNG")
    return out.getvalue()


def samples_zip(artifacts: ArtifactStore, job: dict[str, Any]) -> bytes:
    """Every sample as PNG, with samples.json and metrics.json."""
    records = sample_index(artifacts, job)
    tenant, id = job["tenant"], job["id"]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for rec in records:
            archive.writestr(
                f"samples/{rec['index']:06d}.png",
                artifacts.get(keys.job_sample_png(tenant, id, rec["index"])),
            )
        archive.writestr("samples.json", json.dumps(records, indent=1))
        archive.writestr("metrics.json", artifacts.get(keys.job_metrics_json(tenant, id)))
    return out.getvalue()


def samples_npz(artifacts: ArtifactStore, job: dict[str, Any]) -> bytes:
    require_succeeded(job)
    return artifacts.get(keys.job_samples_npz(job["tenant"], job["id"]))


def reject_class_dataset(artifacts: ArtifactStore, job: dict[str, Any]) -> bytes:
    """The counterfeits as a labelled "reject class" training set: every image gets label K (one
    past the classifier's classes), so a team can retrain with a garbage class."""
    require_succeeded(job)
    with np.load(io.BytesIO(samples_npz(artifacts, job)), allow_pickle=False) as npz:
        x = npz["x"]
        targets = npz["targets"]
    reject = len(job["class_names"])
    out = io.BytesIO()
    np.savez_compressed(
        out,
        x=x,
        y=np.full(len(x), reject, dtype=np.int64),
        counterfeit_of=targets.astype(np.int64),
        class_names=np.array([*job["class_names"], "reject"]),
    )
    return out.getvalue()
