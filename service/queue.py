"""The Celery app, configured once for both sides: the API publishes by task name, the workers
register the tasks on the same app (worker.tasks). Importing this never imports torch.

A message only says "work on record X": the record in the job store is the truth (state, lease,
attempts), so a duplicated or re-delivered message is harmless (see service.background).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue
from kombu.transport import sqlalchemy

from service import logs
from service.records import ClassifierRecord, DatasetRecord, JobRecord
from service.settings import CommonSettings

GPU_QUEUE = "gpu"
"""Long inversion jobs and follow-up sampling: one worker process per GPU, prefetch 1."""
VALIDATE_QUEUE = "validate"
"""Short validation of uploads, each in a sandboxed child process; no GPU needed."""
QUEUES = (GPU_QUEUE, VALIDATE_QUEUE)

RUN_INVERSION = JobRecord.TASK_NAME
VALIDATE_CLASSIFIER = ClassifierRecord.TASK_NAME
VALIDATE_DATASET = DatasetRecord.TASK_NAME


class EmbeddedTransport(sqlalchemy.Transport):
    """kombu's SQL transport (on SQLite: the embedded default's broker), polled 5× a second
    rather than once: a job starts within 0.2 s, for a few cheap queries a second."""

    polling_interval = 0.2


def make_celery(settings: CommonSettings) -> Celery:
    app = Celery("c3", set_as_current=False)
    broker_options: dict[str, object] = {}
    monitored = settings.celery_events and settings.redis_url is not None
    if settings.redis_url:
        # Above the longest job, so Redis never re-delivers a message that is still running.
        broker_options["visibility_timeout"] = settings.max_job_seconds + 3600
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport=None if settings.redis_url else f"{__name__}:EmbeddedTransport",
        result_backend=settings.redis_url,
        task_ignore_result=True,  # results live in the job store
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=GPU_QUEUE,
        task_routes={
            RUN_INVERSION: {"queue": GPU_QUEUE, "routing_key": GPU_QUEUE},
            VALIDATE_CLASSIFIER: {"queue": VALIDATE_QUEUE, "routing_key": VALIDATE_QUEUE},
            VALIDATE_DATASET: {"queue": VALIDATE_QUEUE, "routing_key": VALIDATE_QUEUE},
        },
        task_acks_late=True,  # a message is acknowledged only once its task has finished
        task_reject_on_worker_lost=True,  # a child killed mid-task puts its message back
        worker_prefetch_multiplier=1,  # a worker holds one job, never a queue of them
        task_time_limit=settings.max_job_seconds,
        broker_transport_options=broker_options,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,  # service.logs formats every line
        # Flower and `celery inspect` need events and remote control (broadcast: Redis only);
        # the service itself needs neither: cancel is a flag in the job record.
        worker_send_task_events=monitored,
        task_send_sent_event=monitored,
        worker_enable_remote_control=monitored,
        enable_utc=True,
    )
    return app


def publish(app: Celery, task_name: str, record_id: str) -> None:
    """Send a "work on this record" message to the task's queue, with the id of the request
    behind it, if any (the worker's log lines about the message carry it)."""
    app.send_task(task_name, args=[record_id], kwargs={"request_id": logs.current("request_id")})


def purge(app: Celery) -> int:
    """Drop every queued message (embedded start-up rebuilds the queue from the job store)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        return sum(int(channel.queue_purge(name) or 0) for name in QUEUES)
