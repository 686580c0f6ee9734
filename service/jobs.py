"""Inversion jobs on the API side: check a request against the classifier and the limits, build
the job record, cancel, and render the public view. The worker (worker.jobs) runs them."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from celery import Celery

from service.background import new_task
from service.errors import Conflict, InvalidField, Unavailable
from service.queue import RUN_INVERSION, publish
from service.records import CLASSIFIER, DATASET, FINISHED_JOB_STATES, JOB, new_id, new_record
from service.schemas import InversionCreate, InversionPublic, ProgressPublic, SamplingCreate
from service.settings import ServiceSettings
from service.storage import JobStore, Stores

IDEMPOTENCY = "idempotency"
EVENTS = "job:{id}"
"""Event stream of a job: progress and state changes, for SSE and the loss curves."""


def events_stream(job_id: str) -> str:
    return EVENTS.format(id=job_id)


def _ready(store: JobStore, kind: str, id: str, tenant: str, field: str) -> dict[str, Any]:
    doc = store.get(kind, id)
    if doc is None or doc["tenant"] != tenant:
        raise InvalidField(f"no {kind} with id {id!r}", field=field)
    if doc["state"] != "ready":
        why = (doc.get("error") or {}).get("detail")
        raise InvalidField(
            f"{kind} {id} is {doc['state']}, not ready" + (f": {why}" if why else ""),
            field=field,
        )
    return doc


def _check_limits(settings: ServiceSettings, **values: int | None) -> None:
    limits = {
        "samples_per_class": settings.max_samples_per_class,
        "steps": settings.max_steps,
        "batch_size": settings.max_batch_size,
    }
    for field, value in values.items():
        if value is not None and value > limits[field]:
            raise InvalidField(f"at most {limits[field]} on this service", field=field)


def _check_classes(classes: list[int] | None, classifier: dict[str, Any]) -> list[int]:
    k = len(classifier["class_names"])
    if classes is None:
        return list(range(k))
    bad = [c for c in classes if c >= k]
    if bad:
        raise InvalidField(
            f"class {bad[0]} is out of range: the classifier has {k} classes (0..{k - 1})",
            field="classes",
        )
    return classes


def new_job(
    store: JobStore, settings: ServiceSettings, tenant: str, body: InversionCreate
) -> dict[str, Any]:
    """The record of a new inversion job, validated against its classifier and dataset."""
    classifier = _ready(store, CLASSIFIER, body.classifier_id, tenant, "classifier_id")
    _check_limits(
        settings,
        samples_per_class=body.samples_per_class,
        steps=body.steps,
        batch_size=body.batch_size,
    )
    classes = _check_classes(body.classes, classifier)
    if body.dataset_id is not None:
        dataset = _ready(store, DATASET, body.dataset_id, tenant, "dataset_id")
        if list(dataset["input_shape"]) != list(classifier["input_shape"]):
            raise InvalidField(
                f"the dataset's images are {dataset['input_shape']}, the classifier takes "
                f"{classifier['input_shape']}",
                field="dataset_id",
            )
    params = {
        "classes": classes,
        "samples_per_class": body.samples_per_class,
        "steps": body.steps,
        "batch_size": body.batch_size,
        "loss_weights": body.loss_weights.model_dump(exclude_none=True)
        if body.loss_weights
        else None,
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "sample_dropout": body.sample_dropout,
    }
    return _job_record(tenant, "inversion", None, classifier, body.dataset_id, body.method, params)


def new_sampling_job(
    settings: ServiceSettings, parent: dict[str, Any], body: SamplingCreate
) -> dict[str, Any]:
    """A follow-up job drawing new samples from `parent`'s trained generator."""
    if parent["state"] != "succeeded":
        raise Conflict(f"job {parent['id']} is {parent['state']}: only a succeeded job can sample")
    if parent["method"] == "pixel":
        raise Conflict("pixel optimisation trains no generator: start a new pixel job instead")
    _check_limits(settings, samples_per_class=body.samples_per_class)
    source = parent if parent["kind"] == "inversion" else {**parent, "id": parent["parent_id"]}
    trained = parent["params"]["classes"]
    classes = body.classes or trained
    untrained = [c for c in classes if c not in trained]
    if untrained:
        raise InvalidField(
            f"class {untrained[0]} was not part of the trained job (classes {trained})",
            field="classes",
        )
    params = {
        **parent["params"],
        "classes": classes,
        "samples_per_class": body.samples_per_class,
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "sample_dropout": parent["params"]["sample_dropout"]
        if body.sample_dropout is None
        else body.sample_dropout,
    }
    classifier = {"id": parent["classifier_id"], "class_names": parent["class_names"],
                  "input_shape": parent["input_shape"]}  # fmt: skip
    return _job_record(
        parent["tenant"], "sampling", source["id"], classifier, parent["dataset_id"],
        parent["method"], params,
    )  # fmt: skip


def _job_record(
    tenant: str,
    kind: str,
    parent_id: str | None,
    classifier: dict[str, Any],
    dataset_id: str | None,
    method: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """A queued job. It copies the classifier's class names and shape, so that its results
    stay readable after the classifier is deleted."""
    return new_record(
        tenant, new_id("job"), "queued",
        kind=kind, parent_id=parent_id, classifier_id=classifier["id"], dataset_id=dataset_id,
        method=method, params=params, class_names=classifier["class_names"],
        input_shape=classifier["input_shape"], cancel_requested=False, progress=None,
        started_at=None, finished_at=None, metrics=None, sample_count=None,
    )  # fmt: skip


def cancel(store: JobStore, job: dict[str, Any]) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one is asked to stop between steps."""

    def request_cancel(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc["state"] in FINISHED_JOB_STATES:
            return None
        if doc["state"] == "queued":
            doc["task"].update(state="done", lease=None)
            doc.update(state="cancelled", finished_at=time.time())
        doc["cancel_requested"] = True
        return doc

    updated = store.update(JOB, job["id"], request_cancel)
    if updated is None:
        raise Conflict(f"job {job['id']} has already finished ({job['state']})")
    if updated["state"] == "cancelled":
        store.append_event(events_stream(job["id"]), {"type": "state", "state": "cancelled"})
    return updated


def to_public(doc: dict[str, Any]) -> InversionPublic:
    id = doc["id"]
    links = {"self": f"/inversions/{id}", "events": f"/inversions/{id}/events"}
    if doc["state"] == "succeeded":
        links |= {
            "samples": f"/inversions/{id}/samples",
            "grid": f"/inversions/{id}/grid.png",
            "zip": f"/inversions/{id}/samples.zip",
            "npz": f"/inversions/{id}/samples.npz",
            "metrics": f"/inversions/{id}/metrics.json",
            "report": f"/inversions/{id}/report",
            "dataset": f"/inversions/{id}/dataset",
        }
    progress = doc.get("progress")
    return InversionPublic(
        **{k: v for k, v in doc.items() if k in InversionPublic.model_fields and k != "progress"},
        progress=ProgressPublic(**progress) if progress else None,
        attempts=doc["task"]["attempts"],
        links=links,
    )


def resume(store: JobStore, job: dict[str, Any]) -> dict[str, Any]:
    """Queue a cancelled or failed job again; the worker continues from its last checkpoint."""

    def requeue(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc["state"] not in ("cancelled", "failed") or doc["kind"] != "inversion":
            return None
        doc.update(state="queued", cancel_requested=False, error=None, finished_at=None)
        doc["task"] = {**new_task(), "resumes": doc["task"].get("resumes", 0) + 1}
        return doc

    updated = store.update(JOB, job["id"], requeue)
    if updated is None:
        raise Conflict(
            f"job {job['id']} is {job['state']}: only a cancelled or failed inversion job "
            "can be resumed"
        )
    return updated


def enqueue(stores: Stores, celery: Celery, job: dict[str, Any], *, new: bool = True) -> None:
    """Store a new job (unless `new` is false: a resumed one) and publish it; 503 when the
    broker is down, leaving nothing behind."""
    if new:
        stores.jobs.create(JOB, job)
    try:
        publish(celery, RUN_INVERSION, job["id"])
    except Exception as exc:
        if new:
            stores.jobs.delete(JOB, job["id"])
        raise Unavailable(f"the task queue is unavailable, job not started: {exc}") from exc
    stores.jobs.append_event(events_stream(job["id"]), {"type": "state", "state": "queued"})


def start_job(
    stores: Stores,
    celery: Celery,
    settings: ServiceSettings,
    tenant: str,
    body: InversionCreate,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Validate and start an inversion job. With an idempotency key, a repeat of the same
    request returns the job the first one started instead of starting another."""
    job = new_job(stores.jobs, settings, tenant, body)
    if idempotency_key is None:
        enqueue(stores, celery, job)
        return job
    key = f"{tenant}:{idempotency_key}"
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    claim = json.dumps({"job_id": job["id"], "fingerprint": fingerprint})
    existing = stores.jobs.put_key(IDEMPOTENCY, key, claim)
    if existing is not None:
        earlier = json.loads(existing)
        if earlier["fingerprint"] != fingerprint:
            raise InvalidField(
                "this Idempotency-Key was used with a different request", field="Idempotency-Key"
            )
        first = stores.jobs.get(JOB, earlier["job_id"])
        if first is None:
            raise Conflict("the first request with this Idempotency-Key is still in progress")
        return first
    try:
        enqueue(stores, celery, job)
    except Unavailable:
        stores.jobs.delete_key(IDEMPOTENCY, key)  # free the key: a retry must start the job
        raise
    return job
