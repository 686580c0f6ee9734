"""Factories for records, and `seed_job`: a finished job's records and artifacts as the worker
leaves them, written through the contracts (no worker, no torch), for the service tests."""

from __future__ import annotations

import io
import math
import time
from typing import Any

import numpy as np

from models.contracts.artifacts import (
    ArtifactName,
    AuditFigures,
    ClassMetrics,
    Cost,
    InversionMetrics,
    Phase,
    Progress,
    SampleIndex,
    SampleRecord,
    SamplesArrays,
)
from models.contracts.verdict import TrainingOutcome, build_verdict
from service import exports
from service.records import (
    ClassifierRecord,
    DatasetRecord,
    JobParams,
    JobRecord,
    JobState,
    ProgressEvent,
    StateEvent,
    TaskState,
    UploadState,
    events_stream,
    new_id,
)
from service.storage import JobStore, Stores, keys

METRIC_KEYS = tuple(ClassMetrics.model_fields)


def classifier_record(
    tenant: str = "local",
    *,
    classes: int = 10,
    side: int = 8,
    name: str = "digits",
    state: UploadState = UploadState.READY,
    **fields: Any,
) -> ClassifierRecord:
    record = ClassifierRecord.model_validate({
        "id": new_id("clf"), "tenant": tenant, "state": state, "name": name,
        "format": "safetensors", "input_shape": (1, side, side),
        "class_names": [f"digit {i}" for i in range(classes)], "architecture": "paper-cnn",
        "description": "a test classifier", "tags": ["test"], "sha256": "ab" * 32,
        "size_bytes": 1, "param_count": 12345, **fields,
    })  # fmt: skip
    record.task.state = TaskState.DONE
    return record


def dataset_record(
    tenant: str = "local",
    *,
    shape: tuple[int, int, int] = (1, 8, 8),
    count: int = 200,
    state: UploadState = UploadState.READY,
) -> DatasetRecord:
    record = DatasetRecord(
        id=new_id("ds"), tenant=tenant, state=state, name="held-out digits", format="npz",
        sha256="cd" * 32, size_bytes=1, input_shape=shape, count=count, has_labels=True,
    )  # fmt: skip
    record.task.state = TaskState.DONE
    return record


def job_record(
    classifier: ClassifierRecord,
    *,
    method: str = "c3",
    classes: list[int] | None = None,
    per_class: int = 10,
    steps: int | None = 300,
    seed: int = 0,
    dataset_id: str | None = None,
    created_at: float | None = None,
) -> JobRecord:
    """A queued inversion job of `classifier`."""
    return JobRecord.model_validate(
        {
            "id": new_id("job"),
            "tenant": classifier.tenant,
            "created_at": created_at or time.time(),
            "classifier_id": classifier.id,
            "dataset_id": dataset_id,
            "method": method,
            "params": JobParams(
                classes=list(range(classifier.num_classes)) if classes is None else classes,
                samples_per_class=per_class,
                steps=steps,
                seed=seed,
            ),
            "class_names": list(classifier.class_names),
            "input_shape": classifier.input_shape,
        }
    )


def seed_classifier(stores: Stores, tenant: str = "local", **fields: Any) -> ClassifierRecord:
    record = classifier_record(tenant, **fields)
    stores.jobs.create(record)
    return record


def _figures(rng: np.random.Generator, conf: np.ndarray, reference: bool) -> ClassMetrics:
    figures: dict[str, Any] = {
        "count": len(conf),
        "mean_confidence": float(conf.mean()),
        "confident_share": float((conf >= 0.99).mean()),
        "argmax_accuracy": float((conf >= 0.5).mean()),
        "pixel_diversity": float(rng.uniform(4, 7)),
        "feature_cosine": float(rng.uniform(0.2, 0.6)),
        "collapsed": False,
    }
    for key in METRIC_KEYS:
        figures.setdefault(key, float(rng.uniform(0, 1)) if reference else None)
    return ClassMetrics.model_validate(figures)


def _training_events(store: JobStore, job: JobRecord, last_step: int, every: int) -> None:
    steps = job.params.steps or 500
    for step in range(every, last_step + 1, every):
        kl = 2.3 * math.exp(-step / 40) + 1e-3
        event = ProgressEvent(
            phase=Phase.TRAINING, step=step, total_steps=steps, fraction=step / steps,
            losses={"kl": kl, "cosine": 0.3, "orthogonality": 0.05, "total": kl + 0.035},
            confident_share=min(1.0, step / steps * 1.2), steps_per_second=15.0,
            eta_seconds=(steps - step) / 15, updated_at=time.time(),
        )  # fmt: skip
        store.append_event(events_stream(job.id), event)
        job.progress = Progress.model_validate(event.model_dump(exclude={"type", "attempt", "t"}))


def seed_job(
    stores: Stores,
    classifier: ClassifierRecord,
    *,
    method: str = "c3",
    classes: list[int] | None = None,
    per_class: int = 10,
    steps: int = 300,
    reference: bool = True,
    state: JobState = JobState.SUCCEEDED,
    seed: int = 0,
    progress_every: int = 10,
    reference_size: int = 200,
    legacy: bool = False,
    detectors: list[str] | None = None,
    dataset: DatasetRecord | None = None,
    held_out: dict[str, float] | None = None,
    held_out_table: bool = True,
) -> JobRecord:
    """A job as the worker leaves it: record, events (a progress event every `progress_every`
    steps) and, when succeeded, every artifact and export. `legacy`: as version 1 left it
    (compressed samples.npz, no exports). `dataset`: the reference set (one of its own when
    None). `held_out`: accepted shares, by detector, of the evasion table on the reference
    set's evaluation half (a detector-aware job's only table); `held_out_table=False`: a job
    finished before report.json had that table."""
    rng = np.random.default_rng(seed)
    if reference and dataset is None:
        dataset = dataset_record(
            classifier.tenant, shape=classifier.input_shape, count=reference_size
        )
        stores.jobs.create(dataset)
    elif not reference:
        dataset = None
    if dataset is not None and dataset.count:
        reference_size = dataset.count
    job = job_record(
        classifier, method=method, classes=classes, per_class=per_class, steps=steps,
        seed=seed, dataset_id=dataset.id if dataset else None,
    )  # fmt: skip
    job.state, job.started_at = state, time.time() - 30
    job.params.detectors = detectors  # type: ignore[assignment]
    job.task.state = TaskState.RUNNING if state == JobState.RUNNING else TaskState.DONE
    job.task.attempts = 1
    stream = events_stream(job.id)
    stores.jobs.append_event(stream, StateEvent(state=JobState.QUEUED))
    stores.jobs.append_event(stream, StateEvent(state=JobState.RUNNING))
    last_step = steps if state == JobState.SUCCEEDED else steps // 2
    _training_events(stores.jobs, job, last_step, progress_every)
    if state != JobState.SUCCEEDED:
        stores.jobs.create(job)
        return job

    (c, h, w), names, classes = classifier.input_shape, classifier.class_names, job.params.classes
    n = len(classes) * per_class
    targets = np.repeat(classes, per_class)
    conf = np.clip(1 - rng.exponential(0.004, n), 0.2, 1.0)
    conf[:: max(1, n // 7)] = rng.uniform(0.3, 0.9, len(conf[:: max(1, n // 7)]))
    samples = []
    for i in range(n):
        t = int(targets[i])
        other = (t + 1) % len(names)
        predicted = t if conf[i] >= 0.5 else other
        rest = (1 - conf[i]) if predicted == t else conf[i]
        top = max(conf[i], 1 - conf[i])
        samples.append(SampleRecord(
            index=i, target=t, predicted=predicted, confidence=float(conf[i]),
            top_k=[(predicted, float(top)), (other if predicted == t else t, float(rest))],
        ))  # fmt: skip
    metrics = InversionMetrics(
        overall=_figures(rng, conf, reference),
        per_class={names[k]: _figures(rng, conf[targets == k], reference) for k in classes},
        cost=Cost(train_seconds=19.2, steps=steps, sample_seconds=0.2,
                  samples_per_second=n / 0.2, device="cpu"),
        reference_size=reference_size if reference else 0,
    )  # fmt: skip
    rows = [
        {"name": "max-softmax", "auroc": 0.31, "accepted_share": 0.97, "threshold": 0.91},
        {"name": "energy", "auroc": 0.42, "accepted_share": 0.88, "threshold": 7.5},
        {"name": "mahalanobis", "auroc": 0.93, "accepted_share": 0.12, "threshold": -310.0},
        {"name": "knn", "auroc": 0.99, "accepted_share": 0.015, "threshold": -0.52},
    ]
    whole = {
        "tpr": 0.95, "reference_fit": reference_size // 2,
        "reference_eval": reference_size - reference_size // 2, "counterfeits": n,
        "detectors": rows,
    }  # fmt: skip
    half = reference_size - reference_size // 2  # the evaluation half, split again in two
    evaluation = whole | {
        "reference_fit": half // 2, "reference_eval": half - half // 2,
        "detectors": [r | {"accepted_share": (held_out or {}).get(str(r["name"]),
                                                                  r["accepted_share"])}
                      for r in rows],
    }  # fmt: skip
    figures = AuditFigures.model_validate({
        "msp": {
            "counterfeits": [s.top_k[0][1] for s in samples],
            "reference": list(np.clip(1 - rng.exponential(0.01, reference_size), 0.1, 1.0))
            if reference else None,
        },
        "ood": (evaluation if detectors else whole) if reference else None,
        "held_out_evasion": evaluation if reference and held_out_table else None,
    })  # fmt: skip
    outcome = TrainingOutcome(stop_reason="budget_spent", steps=steps, step_budget=steps)
    figures = figures.model_copy(
        update={"verdict": build_verdict(metrics, outcome if method == "c3" else None)}
    )
    arrays = SamplesArrays(
        x=rng.integers(0, 256, (n, c, h, w), dtype=np.uint8),
        targets=targets,
        predicted=np.array([s.predicted for s in samples]),
        confidence=conf,
    )
    npz = io.BytesIO()
    if legacy:
        np.savez_compressed(npz, **vars(arrays))
    files = {
        ArtifactName.SAMPLES_JSON: SampleIndex.dump_json(samples),
        ArtifactName.SAMPLES_NPZ: npz.getvalue() if legacy else arrays.to_npz(),
        ArtifactName.METRICS_JSON: metrics.model_dump_json().encode(),
        ArtifactName.REPORT_JSON: figures.model_dump_json().encode(),
    }
    for name, blob in files.items():
        stores.artifacts.put(keys.job_artifact(job.tenant, job.id, name), blob)
    if not legacy:
        exports.build(stores.artifacts, job)
    job.finished_at, job.metrics, job.sample_count = time.time(), metrics.overall, n
    job.verdict = figures.verdict
    if job.progress is not None:
        job.progress = job.progress.model_copy(
            update={"phase": Phase.DONE, "fraction": 1.0, "eta_seconds": 0.0}
        )
    stores.jobs.create(job)
    stores.jobs.append_event(stream, StateEvent(state=JobState.SUCCEEDED))
    return job
