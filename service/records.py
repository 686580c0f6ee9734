"""The records the job store keeps, each kind one pydantic model, validated by the store on
every read and write; and each kind's state machine, written once.

One hierarchy per concept (`XBase` → `XCreate` in service.schemas, `XRecord` here, `XPublic` in
service.schemas): a classifier's declaration is the engine's own `ClassifierSpec`, a job's
parameters the engine's `InversionParams`, its progress and figures the engine's artifacts.

Every record that needs a worker (a job, an upload being validated) carries a `Task`: its
state (queued | running | done), attempts, and the `Lease` of the worker that holds it. How
the records move through their states is `service.background`'s business; which moves are
allowed is `TRANSITIONS`, and the stores refuse any other (`check_transition`).
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, TypeAdapter, model_validator

from models.contracts.artifacts import ClassMetrics, Progress
from models.contracts.classifier import ClassifierSpec, CommaList, Name
from models.contracts.cost import CostProfile
from models.contracts.inversion import ClassList, InversionParams, MethodName
from models.contracts.verdict import Verdict

__all__ = [
    "ACTIVE_JOB_STATES",
    "FINISHED_JOB_STATES",
    "JOB_TRANSITIONS",
    "TASK_TRANSITIONS",
    "UPLOAD_TRANSITIONS",
    "ClassifierBase",
    "ClassifierRecord",
    "DatasetBase",
    "DatasetFormat",
    "DatasetRecord",
    "ErrorInfo",
    "IllegalTransition",
    "JobBase",
    "JobEvent",
    "JobEvents",
    "JobParams",
    "JobRecord",
    "JobState",
    "Lease",
    "ProgressEvent",
    "Record",
    "StateEvent",
    "Task",
    "TaskState",
    "UploadState",
    "check_transition",
    "events_stream",
    "new_id",
]

Tag = Annotated[str, Field(min_length=1, max_length=64)]


def new_id(prefix: str) -> str:
    """Sortable by creation time (hex milliseconds), then random: `job_0193a1…`."""
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


class IllegalTransition(ValueError):
    """A write would move a record between states its state machine does not connect."""


# --- work in progress: the task and its lease ------------------------------------------------


class TaskState(StrEnum):
    QUEUED = "queued"  # waiting for a worker (a message is, or will be, in the queue)
    RUNNING = "running"  # a worker holds the lease
    DONE = "done"  # finished one way or another; nothing more to do


TASK_TRANSITIONS = frozenset(
    {
        (TaskState.QUEUED, TaskState.RUNNING),  # claimed
        (TaskState.QUEUED, TaskState.DONE),  # cancelled while queued, or out of attempts
        (TaskState.RUNNING, TaskState.QUEUED),  # its worker died: reaped, or recovered
        (TaskState.RUNNING, TaskState.DONE),  # finished by its worker
        (TaskState.DONE, TaskState.QUEUED),  # resumed
    }
)


class Lease(BaseModel):
    """Which worker holds a record, and when it last said so."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    token: str
    heartbeat_at: float


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    state: TaskState = TaskState.QUEUED
    attempts: int = 0  # claims so far (a worker that died counts)
    lease: Lease | None = None
    resumes: int = 0  # times a user resumed the record after it stopped
    queued_at: float = Field(default_factory=time.time)  # when it last entered the queue
    published_at: float | None = None  # when its message was last sent (None: not yet)
    request_id: str | None = None  # of the request that queued it: the worker logs it too

    def requeued(self, now: float) -> Task:
        """Back in the queue, its message still to be sent."""
        return self.model_copy(
            update={
                "state": TaskState.QUEUED,
                "lease": None,
                "queued_at": now,
                "published_at": None,
            }
        )

    @model_validator(mode="before")
    @classmethod
    def _version_1(cls, data: Any) -> Any:
        """Version 1 kept the lease as a bare token beside `heartbeat_at`."""
        if isinstance(data, dict) and "heartbeat_at" in data:
            data = dict(data)
            beat, token = data.pop("heartbeat_at"), data.get("lease")
            data["lease"] = {"token": token, "heartbeat_at": beat or 0.0} if token else None
        return data


class ErrorInfo(BaseModel):
    title: str
    detail: str
    code: Literal["disk-full"] | None = Field(
        None, description="`disk-full`: the job resumes by itself once there is space again."
    )


# --- the records -----------------------------------------------------------------------------


class Record(BaseModel):
    """What every record has. A subclass names its kind, its states and the allowed moves,
    and (for work) the task that runs it and the states it waits, runs and fails in."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    KIND: ClassVar[str]
    TRANSITIONS: ClassVar[frozenset[tuple[str, str]]]
    TASK_NAME: ClassVar[str]  # the Celery task that works on it (service.queue)
    WAITING: ClassVar[str]  # the record's state while its task is queued
    RUNNING: ClassVar[str]  # ... while a worker holds the lease
    FAILED: ClassVar[str]  # when it cannot be done (e.g. its worker died too often)

    id: str
    tenant: str
    state: str
    created_at: float = Field(default_factory=time.time)
    task: Task = Field(default_factory=Task)
    error: ErrorInfo | None = None


def check_transition(before: Record, after: Record) -> None:
    """Refuse a write that moves `before` to `after` along no edge of its state machines."""
    moves = (
        (before.state, after.state, type(before).TRANSITIONS, "state"),
        (before.task.state, after.task.state, TASK_TRANSITIONS, "task state"),
    )
    for old, new, allowed, what in moves:
        if old != new and (old, new) not in allowed:
            raise IllegalTransition(f"{before.KIND} {before.id}: {what} {old} → {new}")


class UploadState(StrEnum):
    VALIDATING = "validating"
    READY = "ready"
    REJECTED = "rejected"


UPLOAD_TRANSITIONS = frozenset(
    {
        (UploadState.VALIDATING, UploadState.READY),
        (UploadState.VALIDATING, UploadState.REJECTED),
    }
)


class Upload(Record):
    """An uploaded file under validation, then ready (a canonical copy) or rejected."""

    TRANSITIONS = UPLOAD_TRANSITIONS
    WAITING = RUNNING = UploadState.VALIDATING
    FAILED = UploadState.REJECTED

    state: UploadState = UploadState.VALIDATING
    sha256: str
    size_bytes: int
    filename: str | None = None
    canonical_sha256: str | None = None  # of the validated copy that jobs load
    validated_at: float | None = None


class ClassifierBase(ClassifierSpec):
    """A classifier's declaration (the engine's spec) and how its owner describes it."""

    model_config = ConfigDict(frozen=False, extra="forbid", validate_assignment=True)

    name: Name
    description: Annotated[str, Field(max_length=5_000)] = ""
    tags: Annotated[list[Tag], CommaList] = Field(default_factory=list, max_length=32)

    def spec(self) -> ClassifierSpec:
        """The engine's declaration, without the owner's description."""
        return ClassifierSpec.model_validate(
            self.model_dump(include=set(ClassifierSpec.model_fields))
        )


class ClassifierRecord(ClassifierBase, Upload):
    KIND = "classifier"
    TASK_NAME = "c3.validate_classifier"

    param_count: int | None = None
    forward_latency_ms: float | None = None
    cost: CostProfile | None = None  # measured by the validation (jobs are checked against it)
    batch_norm_layers: int | None = None  # with running statistics: detector-aware c3's
    # data-free prior; 0: such a job needs a reference set (None: validated before this field)


DatasetFormat = Literal["npz", "png-zip"]


class DatasetBase(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Name
    description: Annotated[str, Field(max_length=5_000)] = ""
    tags: Annotated[list[Tag], CommaList] = Field(default_factory=list, max_length=32)


class DatasetRecord(DatasetBase, Upload):
    KIND = "dataset"
    TASK_NAME = "c3.validate_dataset"

    format: DatasetFormat
    count: int | None = None
    input_shape: tuple[int, int, int] | None = None
    has_labels: bool | None = None
    label_max: int | None = None  # the largest label, for checking it against a classifier


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_JOB_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
FINISHED_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

JOB_TRANSITIONS = frozenset(
    {
        (JobState.QUEUED, JobState.RUNNING),  # claimed by a worker
        (JobState.QUEUED, JobState.CANCELLED),  # cancelled before it started
        (JobState.QUEUED, JobState.FAILED),  # its workers died too often
        (JobState.RUNNING, JobState.QUEUED),  # its worker died: reaped, or recovered
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.FAILED),
        (JobState.RUNNING, JobState.CANCELLED),  # stopped at a step after a cancel request
        (JobState.FAILED, JobState.QUEUED),  # resumed from its checkpoint
        (JobState.CANCELLED, JobState.QUEUED),  # resumed from its checkpoint
    }
)


class JobParams(InversionParams):
    """A job's parameters as recorded: the user's choices with the classes and the seed
    resolved (every class, a random seed, when the request left them open)."""

    classes: ClassList
    seed: int = Field(ge=0)


class JobBase(BaseModel):
    """What a job is and how far it got: kept in the record, shown by the API."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str
    state: JobState = JobState.QUEUED
    kind: Literal["inversion", "sampling"] = "inversion"
    parent_id: str | None = Field(
        None, description="The job whose trained generator a sampling job draws from."
    )
    classifier_id: str
    dataset_id: str | None = Field(None, description="Reference set for the distinctness metrics.")
    method: MethodName
    params: JobParams
    cancel_requested: bool = False
    progress: Progress | None = None
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    metrics: ClassMetrics | None = Field(None, description="Overall figures once succeeded.")
    sample_count: int | None = None
    checkpoint_step: int | None = Field(None, description="Step of the latest checkpoint.")
    resumed_from_step: int | None = Field(
        None, description="Step the current (or last) attempt started from: > 0 after a resume."
    )
    steps_this_attempt: int | None = Field(None, description="Training steps the last attempt ran.")
    engine_seconds: float | None = Field(
        None, description="Time spent in the inversion engine (the rest is service overhead)."
    )
    stored_bytes: int | None = Field(None, description="Bytes of the files the job wrote.")
    verdict: Verdict | None = Field(
        None, description="Once succeeded: which targets the run met, which it missed, what to try."
    )


class JobRecord(JobBase, Record):
    """An inversion job ("inversion": train and sample) or a follow-up "sampling" job that
    draws more samples from a finished job's generator. It copies the classifier's class names
    and input shape, so that its results stay readable after the classifier is deleted."""

    KIND = "job"
    TASK_NAME = "c3.run_inversion"
    TRANSITIONS = JOB_TRANSITIONS
    WAITING, RUNNING, FAILED = JobState.QUEUED, JobState.RUNNING, JobState.FAILED

    state: JobState = JobState.QUEUED
    class_names: list[str]
    input_shape: tuple[int, int, int]
    turn: int = 0  # its place in the fair order across tenants (service.fairness)

    @model_validator(mode="before")
    @classmethod
    def _version_1(cls, data: Any) -> Any:
        """Version 1 kept the training time of the latest checkpoint in the record."""
        if isinstance(data, dict) and "training_seconds_at_checkpoint" in data:
            data = {k: v for k, v in data.items() if k != "training_seconds_at_checkpoint"}
        return data

    def resumed(self, now: float) -> JobRecord | None:
        """Back in the queue to continue from its checkpoint; None unless it was stopped (a
        cancelled or failed inversion)."""
        if self.state not in (JobState.CANCELLED, JobState.FAILED) or self.kind != "inversion":
            return None
        self.state, self.cancel_requested, self.error, self.finished_at = (
            JobState.QUEUED, False, None, None
        )  # fmt: skip
        self.task = Task(resumes=self.task.resumes + 1, queued_at=now)
        return self

    @property
    def training_job_id(self) -> str:
        """The job whose trained generator this one uses (itself, for an inversion)."""
        return self.parent_id if self.kind == "sampling" and self.parent_id else self.id


# --- job events ------------------------------------------------------------------------------


def events_stream(job_id: str) -> str:
    """The event stream of a job: progress and state changes, for SSE and the loss curves."""
    return f"job:{job_id}"


class ProgressEvent(Progress):
    type: Literal["progress"] = "progress"
    attempt: int | None = None
    t: float | None = None


class StateEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["state"] = "state"
    state: JobState
    error: ErrorInfo | None = None
    attempt: int | None = None
    t: float | None = None


JobEvent = Annotated[ProgressEvent | StateEvent, Discriminator("type")]
JobEvents: TypeAdapter[ProgressEvent | StateEvent] = TypeAdapter(JobEvent)
"""Validates a stored event of either type."""
