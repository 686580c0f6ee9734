"""Task registration: thin wrappers that name the task and delegate to the job modules. Heavy
modules (torch) are imported inside the task, in the pool's child, never in the main process."""

from __future__ import annotations

from celery import Celery

from service.queue import RUN_INVERSION, VALIDATE_CLASSIFIER, VALIDATE_DATASET


def run_inversion(job_id: str, request_id: str | None = None) -> None:
    """`request_id` is for the logs (worker.app binds it before the task runs)."""
    from worker.jobs import run_job

    run_job(job_id)


def validate_classifier(classifier_id: str, request_id: str | None = None) -> None:
    from worker.validation import validate_classifier as validate

    validate(classifier_id)


def validate_dataset(dataset_id: str, request_id: str | None = None) -> None:
    from worker.validation import validate_dataset as validate

    validate(dataset_id)


def register(app: Celery) -> None:
    """Register every task on `app` under the names the API publishes (service.queue)."""
    app.task(name=RUN_INVERSION)(run_inversion)
    app.task(name=VALIDATE_CLASSIFIER)(validate_classifier)
    app.task(name=VALIDATE_DATASET)(validate_dataset)
