"""Inversion jobs on the API side: check a request against the classifier and the limits, build
the job record, cancel, resume, and publish. The worker (worker.jobs) runs them."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

from celery import Celery

from models.contracts.cost import DEFAULT_WIDTH, estimate_job_memory
from models.contracts.inversion import InversionConfig
from service import logs, quotas, read_cache
from service.background import publish_task
from service.errors import Conflict, InvalidField, Unavailable
from service.fairness import next_turn
from service.records import (
    FINISHED_JOB_STATES,
    ClassifierRecord,
    DatasetRecord,
    JobParams,
    JobRecord,
    JobState,
    StateEvent,
    TaskState,
    UploadState,
    events_stream,
    new_id,
)
from service.schemas import InversionCreate, SamplingCreate
from service.settings import ServiceSettings
from service.storage import JobStore, Stores, keys
from service.storage.base import R

IDEMPOTENCY = "idempotency"


def _ready(store: JobStore, model: type[R], id: str, tenant: str, field: str) -> R:
    record = store.get(model, id)
    if record is None or record.tenant != tenant:
        raise InvalidField(f"no {model.KIND} with id {id!r}", field=field)
    if record.state != UploadState.READY:
        why = record.error.detail if record.error else None
        raise InvalidField(
            f"{model.KIND} {id} is {record.state}, not ready" + (f": {why}" if why else ""),
            field=field,
        )
    return record


def _check_limits(settings: ServiceSettings, **values: int | None) -> None:
    limits = {
        "samples_per_class": settings.max_samples_per_class,
        "steps": settings.max_steps,
        "batch_size": settings.max_batch_size,
    }
    for field, value in values.items():
        if value is not None and value > limits[field]:
            raise InvalidField(f"at most {limits[field]} on this service", field=field)


def _check_total(settings: ServiceSettings, classes: list[int], samples_per_class: int) -> None:
    total = len(classes) * samples_per_class
    if total > settings.max_samples:
        fits = max(1, settings.max_samples // len(classes))
        raise InvalidField(
            f"{len(classes)} classes × {samples_per_class:,} samples is {total:,} samples, more "
            f"than the {settings.max_samples:,} a job may draw on this service: ask for at most "
            f"{fits:,} per class, or fewer classes",
            field="samples_per_class",
        )


def _check_classes(classes: list[int] | None, classifier: ClassifierRecord) -> list[int]:
    k = classifier.num_classes
    if classes is None:
        return list(range(k))
    bad = [c for c in classes if c >= k]
    if bad:
        raise InvalidField(
            f"class {bad[0]} is out of range: the classifier has {k} classes (0..{k - 1})",
            field="classes",
        )
    return classes


def _check_memory(
    settings: ServiceSettings,
    classifier: ClassifierRecord,
    config: InversionConfig,
    params: JobParams,
    dataset: DatasetRecord | None,
) -> None:
    """Refuse (422, with the figures) a job whose estimated peak memory is over the budget of
    one job, before it can take a worker down."""
    estimate = estimate_job_memory(
        classifier.input_shape,
        classifier.num_classes,
        batch_size=config.batch_size,
        latent_dim=config.latent_dim,
        width=config.width or DEFAULT_WIDTH,  # the widest a sized generator gets
        sample_batch_size=config.sample_batch_size,
        trains_generator=config.method != "pixel",
        profile=classifier.cost,
        classifier_parameters=classifier.param_count or 0,
        samples=len(params.classes) * params.samples_per_class,
        samples_per_class=params.samples_per_class,
        reference_images=(dataset.count or 0) if dataset is not None else 0,
    )
    budget = settings.job_memory_mb * 2**20
    if estimate.total <= budget:
        return
    largest = max(("samples", "generator", "classifier", "reference"),
                  key=lambda part: getattr(estimate, part))  # fmt: skip
    advice = {
        "samples": "ask for fewer samples per class or fewer classes",
        "generator": "invert fewer classes at a time (the generator grows with the classes)",
        "classifier": "use a smaller batch_size (the classifier's activations grow with it)",
        "reference": "use a smaller reference set",
    }[largest]
    raise InvalidField(
        f"this job would need about {estimate.describe()}, more than the "
        f"{settings.job_memory_mb:,} MB one job may use on this service: {advice}",
        field="samples_per_class" if largest == "samples" else "batch_size"
        if largest == "classifier" else "classes" if largest == "generator" else "dataset_id",
        estimate={k: getattr(estimate, k) for k in ("generator", "classifier", "samples",
                                                    "reference")} | {"total": estimate.total},
    )  # fmt: skip


def _check_prior(
    params: JobParams, classifier: ClassifierRecord, dataset: DatasetRecord | None
) -> None:
    """Detector-aware c3 without real features needs the classifier's BatchNorm statistics:
    say so now rather than fail the job in the worker."""
    data_free = dataset is None or params.prior_source == "classifier"
    if not params.detectors or not data_free or classifier.batch_norm_layers != 0:
        return  # None: validated before the count was kept; the worker says it if need be
    if dataset is None:
        raise InvalidField(
            "detector-aware c3 needs a reference set for this classifier: it has no BatchNorm "
            "layers with running statistics to stand in for real features (an ONNX export "
            "folds them into its convolutions); upload one and pass its id",
            field="dataset_id",
        )
    raise InvalidField(
        "prior_source classifier: this classifier has no BatchNorm layers with running "
        "statistics to build the prior from (an ONNX export folds them into its "
        "convolutions); leave prior_source out to use the reference set",
        field="prior_source",
    )


def _seed(seed: int | None) -> int:
    return seed if seed is not None else secrets.randbelow(2**31)


def new_job(
    store: JobStore, settings: ServiceSettings, tenant: str, body: InversionCreate
) -> JobRecord:
    """The record of a new inversion job, validated against its classifier and dataset."""
    classifier = _ready(store, ClassifierRecord, body.classifier_id, tenant, "classifier_id")
    _check_limits(
        settings,
        samples_per_class=body.samples_per_class,
        steps=body.steps,
        batch_size=body.batch_size,
    )
    classes = _check_classes(body.classes, classifier)
    _check_total(settings, classes, body.samples_per_class)
    dataset = None
    if body.dataset_id is not None:
        dataset = _ready(store, DatasetRecord, body.dataset_id, tenant, "dataset_id")
        if dataset.input_shape != classifier.input_shape:
            raise InvalidField(
                f"the dataset's images are {list(dataset.input_shape or ())}, the classifier "
                f"takes {list(classifier.input_shape)}",
                field="dataset_id",
            )
        if dataset.label_max is not None and dataset.label_max >= classifier.num_classes:
            raise InvalidField(
                f"the dataset has labels up to {dataset.label_max}, the classifier only "
                f"{classifier.num_classes} classes (0..{classifier.num_classes - 1}): its "
                "labels must be the classifier's class indices",
                field="dataset_id",
            )
    params = JobParams.model_validate(
        body.model_dump(include=set(JobParams.model_fields))
        | {"classes": classes, "seed": _seed(body.seed)}
    )
    _check_prior(params, classifier, dataset)
    _check_memory(settings, classifier, params.config(body.method), params, dataset)
    return JobRecord(
        id=new_id("job"),
        tenant=tenant,
        classifier_id=classifier.id,
        dataset_id=body.dataset_id,
        method=body.method,
        params=params,
        class_names=list(classifier.class_names),
        input_shape=classifier.input_shape,
    )


def new_sampling_job(
    settings: ServiceSettings, parent: JobRecord, body: SamplingCreate
) -> JobRecord:
    """A follow-up job drawing new samples from `parent`'s trained generator."""
    if parent.state != JobState.SUCCEEDED:
        raise Conflict(f"job {parent.id} is {parent.state}: only a succeeded job can sample")
    if parent.method == "pixel":
        raise Conflict("pixel optimisation trains no generator: start a new pixel job instead")
    _check_limits(settings, samples_per_class=body.samples_per_class)
    trained = parent.params.classes
    classes = body.classes or trained
    untrained = [c for c in classes if c not in trained]
    if untrained:
        raise InvalidField(
            f"class {untrained[0]} was not part of the trained job (classes {trained})",
            field="classes",
        )
    _check_total(settings, classes, body.samples_per_class)
    sample_dropout = body.sample_dropout
    params = parent.params.model_copy(
        update={
            "classes": classes,
            "samples_per_class": body.samples_per_class,
            "seed": _seed(body.seed),
            "sample_dropout": parent.params.sample_dropout
            if sample_dropout is None
            else sample_dropout,
        }
    )
    return JobRecord(
        id=new_id("job"),
        tenant=parent.tenant,
        kind="sampling",
        parent_id=parent.training_job_id,
        classifier_id=parent.classifier_id,
        dataset_id=parent.dataset_id,
        method=parent.method,
        params=params,
        class_names=parent.class_names,
        input_shape=parent.input_shape,
    )


def cancel(store: JobStore, job: JobRecord) -> JobRecord:
    """A queued job is cancelled at once; a running one is asked to stop between steps."""

    def request_cancel(record: JobRecord) -> JobRecord | None:
        if record.state in FINISHED_JOB_STATES:
            return None
        if record.state == JobState.QUEUED:
            record.task = record.task.model_copy(update={"state": TaskState.DONE, "lease": None})
            record.state = JobState.CANCELLED
            record.finished_at = time.time()
        record.cancel_requested = True
        return record

    updated = store.update(JobRecord, job.id, request_cancel)
    if updated is None:
        raise Conflict(f"job {job.id} has already finished ({job.state})")
    if updated.state == JobState.CANCELLED:
        store.append_event(events_stream(job.id), StateEvent(state=JobState.CANCELLED))
    return updated


def resume(store: JobStore, job: JobRecord) -> JobRecord:
    """Queue a cancelled or failed job again, in its tenant's next turn (service.fairness);
    the worker continues from its last checkpoint."""
    turn = next_turn(store, job.tenant)

    def resumed(record: JobRecord) -> JobRecord | None:
        again = record.resumed(time.time())
        if again is not None:
            again.turn, again.task.request_id = turn, logs.current("request_id")
        return again

    updated = store.update(JobRecord, job.id, resumed)
    if updated is None:
        raise Conflict(
            f"job {job.id} is {job.state}: only a cancelled or failed inversion job can be resumed"
        )
    return updated


def resume_and_enqueue(stores: Stores, celery: Celery, job: JobRecord) -> JobRecord:
    """Resume a cancelled or failed job and publish it again (the API and the dashboard)."""
    resumed = resume(stores.jobs, job)
    enqueue(stores, celery, resumed, new=False)
    return resumed


def draw_more(
    stores: Stores,
    celery: Celery,
    settings: ServiceSettings,
    parent: JobRecord,
    body: SamplingCreate,
) -> JobRecord:
    """Start a follow-up job drawing new samples from `parent`'s trained generator."""
    quotas.check_jobs(stores.jobs, settings, parent.tenant)
    follow_up = new_sampling_job(settings, parent, body)
    enqueue(stores, celery, follow_up)
    return follow_up


def delete_job(stores: Stores, job: JobRecord) -> None:
    """Delete a finished job: its files, cached reads, events and record."""
    if job.state not in FINISHED_JOB_STATES:
        raise Conflict(f"job {job.id} is {job.state}: cancel it first")
    # Files first: that frees space even when the disk is full, and a crash in between leaves a
    # record whose files read as gone (and can be deleted again), never files without a record.
    stores.artifacts.delete_prefix(keys.job_prefix(job.tenant, job.id))
    read_cache.cache.forget(job.id)
    stores.jobs.delete_events(events_stream(job.id))
    stores.jobs.delete(JobRecord, job.id)


def enqueue(stores: Stores, celery: Celery, job: JobRecord, *, new: bool = True) -> None:
    """Store a new job (unless `new` is false: a resumed one) and publish it; 503 when the
    broker is down, leaving nothing behind. The "queued" event comes first: a worker may
    claim the job (and say "running") the moment its message is out. A new job takes its
    tenant's next turn (service.fairness)."""
    logs.annotate(job_id=job.id)
    if new:
        job.turn = next_turn(stores.jobs, job.tenant)
        job.task.request_id = logs.current("request_id")
        stores.jobs.create(job)
    stream = events_stream(job.id)
    stores.jobs.append_event(stream, StateEvent(state=JobState.QUEUED))
    try:
        publish_task(stores.jobs, celery, JobRecord, job.id)
    except Exception as exc:
        if new:
            stores.jobs.delete(JobRecord, job.id)
            stores.jobs.delete_events(stream)
        raise Unavailable(f"the task queue is unavailable, job not started: {exc}") from exc


def start_job(
    stores: Stores,
    celery: Celery,
    settings: ServiceSettings,
    tenant: str,
    body: InversionCreate,
    idempotency_key: str | None = None,
) -> JobRecord:
    """Validate and start an inversion job. With an idempotency key, a repeat of the same
    request returns the job the first one started instead of starting another."""
    quotas.check_jobs(stores.jobs, settings, tenant)
    job = new_job(stores.jobs, settings, tenant, body)
    if idempotency_key is None:
        enqueue(stores, celery, job)
        return job
    key = f"{tenant}:{idempotency_key}"
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    claim = json.dumps({"job_id": job.id, "fingerprint": fingerprint})
    existing = stores.jobs.put_key(IDEMPOTENCY, key, claim)
    if existing is not None:
        earlier = json.loads(existing)
        if earlier["fingerprint"] != fingerprint:
            raise InvalidField(
                "this Idempotency-Key was used with a different request", field="Idempotency-Key"
            )
        first = stores.jobs.get(JobRecord, earlier["job_id"])
        if first is None:
            raise Conflict("the first request with this Idempotency-Key is still in progress")
        return first
    try:
        enqueue(stores, celery, job)
    except Unavailable:
        stores.jobs.delete_key(IDEMPOTENCY, key)  # free the key: a retry must start the job
        raise
    return job
