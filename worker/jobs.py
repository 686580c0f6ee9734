"""The inversion task: claim a job, run the engine's `audit` with hooks that report progress,
checkpoint and watch for a cancel, store the artifacts, finish the record. The logic of
inversion lives in `models`; this module moves bytes between the engine and the stores, and
keeps the job record truthful.

A job whose worker died is re-queued by the reaper and claimed again: it resumes from its last
checkpoint, so no step before the checkpoint is done twice, and a follow-up "sampling" job
continues from the trained generator of the job it follows instead of training.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from models.audit import AuditHooks, AuditResult, InversionFailed, Reference, Stopped, audit
from models.classifier import LoadedClassifier
from models.contracts.artifacts import Phase, Progress
from models.contracts.classifier import ClassifierRejected
from models.device import pick_device
from models.reference_data import load_canonical
from models.threads import share_of_cores, use_threads
from service.background import Claim, Heartbeat
from service.exports import build as build_exports
from service.exports import file_chunks
from service.fairness import claim_in_turn
from service.records import (
    ClassifierRecord,
    DatasetRecord,
    ErrorInfo,
    JobRecord,
    JobState,
    ProgressEvent,
    StateEvent,
    UploadState,
    events_stream,
)
from service.storage import ArtifactNotFound, StoreUnavailable, is_disk_full, keys
from worker.classifier_cache import load_cached_classifier
from worker.context import WorkerContext, get_context
from worker.limits import memory_cap
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobFailed(Exception):
    """The job cannot succeed; the message tells the user why."""


class LeaseLost(Exception):
    """The reaper gave the job to another worker: this one must stop writing."""


@dataclass
class JobRun:
    ctx: WorkerContext
    lease: Claim[JobRecord]
    job: JobRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    load_seconds: float = 0.0  # loading the classifier: engine time spent outside `audit`
    stored_bytes: int = 0  # what the job's files take

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set()

    # -- writing to the record --------------------------------------------------------------
    def update(self, change: Callable[[JobRecord], None]) -> None:
        def mutate(record: JobRecord) -> JobRecord:
            change(record)
            return record

        if self.lost.is_set() or self.lease.update(self.ctx.stores.jobs, mutate) is None:
            self.lost.set()
            raise LeaseLost(self.job.id)

    def event(self, event: ProgressEvent | StateEvent) -> None:
        stamped = event.model_copy(update={"attempt": self.job.task.attempts, "t": time.time()})
        self.ctx.stores.jobs.append_event(events_stream(self.job.id), stamped)

    def report(self, progress: Progress) -> None:
        """Keep the record's progress current and tell the event stream (best effort)."""
        try:
            self.update(lambda record: setattr(record, "progress", progress))
            self.event(ProgressEvent(**progress.model_dump()))
        except StoreUnavailable as exc:  # transient (e.g. Redis restarting): report later
            log.warning("job %s: progress not recorded: %s", self.job.id, exc)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> AuditResult:
        settings = self.ctx.settings
        size_threads(settings)
        device = pick_device(settings.device)
        self.report(Progress(phase=Phase.LOADING, step=0, total_steps=1, fraction=0.0,
                             updated_at=time.time()))  # fmt: skip
        classifier = self._classifier(device)
        state = self._state(device)
        resumed_from = self._resumed_from(state)
        self.update(lambda record: setattr(record, "resumed_from_step", resumed_from))
        params = self.job.params
        result = audit(
            classifier,
            None if self.job.kind == "sampling" else params.config(self.job.method),
            classes=params.classes,
            samples_per_class=params.samples_per_class,
            reference=self._reference(),
            sample_dropout=params.sample_dropout,
            sample_seed=params.seed,
            state=state,
            hooks=AuditHooks(
                on_progress=self.report,
                should_stop=self.should_stop,
                on_checkpoint=self._checkpoint if self.job.kind == "inversion" else None,
                checkpoint_every=settings.checkpoint_every_steps,
                progress_every_s=settings.progress_every_seconds,
            ),
            device=device,
            step_limit=settings.max_steps,
        )
        self.stored_bytes = self._save(result)
        return result

    def _classifier(self, device: torch.device) -> LoadedClassifier:
        record = self.ctx.stores.jobs.get(ClassifierRecord, self.job.classifier_id)
        if record is None or record.state != UploadState.READY:
            raise JobFailed(f"classifier {self.job.classifier_id} no longer exists")
        start = time.perf_counter()
        classifier = load_cached_classifier(self.ctx, record, device)
        self.load_seconds = time.perf_counter() - start
        return classifier

    def _state(self, device: torch.device) -> bytes | None:
        """Where the engine continues from: the trained generator (a sampling job), the last
        checkpoint (a resumed job), or nothing (a fresh start)."""
        artifacts, tenant = self.ctx.stores.artifacts, self.job.tenant
        if self.job.kind == "sampling":
            try:
                return artifacts.get(keys.job_generator(tenant, self.job.training_job_id))
            except ArtifactNotFound:
                raise JobFailed(
                    f"the trained generator of job {self.job.training_job_id} is gone"
                ) from None
        checkpoint = keys.job_checkpoint(tenant, self.job.id)
        return artifacts.get(checkpoint) if artifacts.exists(checkpoint) else None

    def _resumed_from(self, state: bytes | None) -> int:
        if state is None or self.job.kind == "sampling":
            return 0
        step = self.job.checkpoint_step or 0
        log.info("job %s resumes from its checkpoint at step %d", self.job.id, step)
        return step

    def _checkpoint(self, state: bytes, step: int) -> None:
        if self.lost.is_set():
            return
        self.ctx.stores.artifacts.put(keys.job_checkpoint(self.job.tenant, self.job.id), state)
        try:
            self.update(lambda record: setattr(record, "checkpoint_step", step))
        except StoreUnavailable as exc:  # the blob is what a resume reads; the record waits
            log.warning("job %s: checkpoint step not recorded: %s", self.job.id, exc)

    def _reference(self) -> Reference | None:
        dataset_id = self.job.dataset_id
        if not dataset_id:
            return None
        if self.ctx.stores.jobs.get(DatasetRecord, dataset_id) is None:
            raise JobFailed(f"reference dataset {dataset_id} no longer exists")
        ref = load_canonical(
            self.ctx.stores.artifacts.get(keys.dataset_canonical(self.job.tenant, dataset_id))
        )
        return Reference(
            torch.from_numpy(ref.as_float()), None if ref.y is None else torch.from_numpy(ref.y)
        )

    def _save(self, result: AuditResult) -> int:
        """Store the run's files and build its exports (service.exports); returns their
        bytes."""
        artifacts, tenant, id = self.ctx.stores.artifacts, self.job.tenant, self.job.id
        saving = Throttle(self.ctx.settings.progress_every_seconds)

        def report(done: int, total: int) -> None:
            if saving.due() or done == total:
                fraction = done / max(total, 1)
                self.report(Progress(phase=Phase.SAVING, step=done, total_steps=total,
                                     fraction=fraction, updated_at=time.time()))  # fmt: skip

        report(0, len(result.samples))
        for name, blob in result.artifacts().items():
            key = keys.job_artifact(tenant, id, name)
            if isinstance(blob, Path):  # streamed from the file, never read whole
                with blob.open("rb") as f:
                    artifacts.put_stream(key, file_chunks(f))
            else:
                artifacts.put(key, blob)
        stored = sum(f.bytes for f in build_exports(artifacts, self.job, report).files.values())
        if self.job.kind == "inversion" and result.trained_state is not None:
            artifacts.put(keys.job_generator(tenant, id), result.trained_state)
            stored += len(result.trained_state)
        return stored


class Throttle:
    """True at most once per `seconds` (and the first time)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self._last = seconds, -float("inf")

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True


def size_threads(settings: WorkerSettings) -> int:
    """A job process's CPU threads: its share of the host's cores (`C3_JOB_PROCESSES` share
    them), or `C3_TORCH_THREADS`."""
    return use_threads(settings.torch_threads or share_of_cores(settings.job_processes or 1))


def run_job(message_job_id: str) -> None:
    """Run the queued job whose turn is next (service.fairness): the message's job, or one of
    another tenant that waited less long."""
    ctx = get_context()
    store = ctx.stores.jobs
    claimed = claim_in_turn(store, max_attempts=ctx.settings.max_attempts)
    if claimed is None:
        log.info("message for job %s: no job queued (duplicate, cancelled or done)", message_job_id)
        return
    lease, job = claimed
    job_id = job.id
    log.info("job %s started (attempt %d, turn %d)", job_id, job.task.attempts, job.turn)
    run = JobRun(ctx, lease, job)
    run.update(lambda record: setattr(record, "started_at", record.started_at or time.time()))
    run.event(StateEvent(state=JobState.RUNNING))

    def on_renew(record: JobRecord) -> None:
        if record.cancel_requested:
            run.cancel.set()

    with (
        Heartbeat(store, lease, ctx.settings.heartbeat_seconds, on_renew) as beat,
        _job_memory(ctx.settings),
    ):
        run.lost = beat.lost
        try:
            result = run.run()
            finish = _succeeded(result, result.engine_seconds + run.load_seconds, run.stored_bytes)
        except (Stopped, LeaseLost):
            if run.lost.is_set():
                log.warning("job %s: lease lost, leaving it to its new owner", job_id)
                return
            finish = _ended(JobState.CANCELLED, None)
        except Exception as exc:
            finish = _ended(JobState.FAILED, _failure(job_id, exc, ctx.settings))
    final = _retrying(lambda: lease.finish(store, finish))
    if final is not None:
        log.info("job %s %s", job_id, final.state)
        _retrying(lambda: run.event(StateEvent(state=final.state, error=final.error)))
        if final.state == JobState.SUCCEEDED:  # failed or cancelled jobs keep it, to be resumed
            ctx.stores.artifacts.delete_prefix(keys.job_checkpoint(job.tenant, job_id))


def _succeeded(
    result: AuditResult, engine_seconds: float, stored_bytes: int
) -> Callable[[JobRecord], JobRecord]:
    def finish(record: JobRecord) -> JobRecord:
        steps = result.method.step_count
        record.state = JobState.SUCCEEDED
        record.finished_at = time.time()
        record.metrics = result.metrics.overall
        record.sample_count = len(result.samples)
        record.engine_seconds = engine_seconds
        record.stored_bytes = stored_bytes
        record.verdict = result.verdict
        if record.kind == "inversion":
            record.resumed_from_step = result.resumed_from_step
            record.steps_this_attempt = steps - result.resumed_from_step
        if record.progress is not None:
            record.progress = record.progress.model_copy(
                update={
                    "phase": Phase.DONE,
                    "step": steps,
                    "total_steps": steps,
                    "fraction": 1.0,
                    "eta_seconds": 0.0,
                }
            )
        return record

    return finish


def _ended(state: JobState, error: ErrorInfo | None) -> Callable[[JobRecord], JobRecord]:
    def finish(record: JobRecord) -> JobRecord:
        record.state, record.error, record.finished_at = state, error, time.time()
        return record

    return finish


def _failure(job_id: str, exc: BaseException, settings: WorkerSettings) -> ErrorInfo:
    """Why a job failed, in words its user can act on."""
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
        return _out_of_memory(settings.job_memory_mb)  # torch's allocator past the job's cap
    if is_disk_full(exc):
        return _disk_full(exc)
    if isinstance(exc, JobFailed | InversionFailed):
        return ErrorInfo(title="Job failed", detail=str(exc))
    if isinstance(exc, ClassifierRejected):  # fine when validated, failing at this job's size
        return ErrorInfo(
            title="Classifier failed", detail=f"the classifier fails on this job's batches: {exc}"
        )
    log.error("job %s failed", job_id, exc_info=exc)
    return ErrorInfo(title="Internal error", detail=f"{type(exc).__name__}: {exc}")


def _disk_full(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        title="Disk full",
        detail=f"the job could not write its files ({exc}); it resumes from its last "
        "checkpoint by itself once there is space again",
        code="disk-full",
    )


JOB_HEADROOM = 512 * 1024 * 1024
"""Address space a job may map beyond its memory budget: thread stacks and allocator arenas are
reserved, not used, and count against RLIMIT_AS all the same."""


def _job_memory(settings: WorkerSettings) -> contextlib.AbstractContextManager[object]:
    """The job's memory cap, on the CPU (CUDA reserves address space by the terabyte: there a
    cap would fail every job)."""
    if torch.cuda.is_available() or (settings.device or "").startswith("cuda"):
        return contextlib.nullcontext()
    return memory_cap(settings.job_memory_mb * 1024 * 1024 + JOB_HEADROOM)


def _out_of_memory(budget_mb: int) -> ErrorInfo:
    return ErrorInfo(
        title="Out of memory",
        detail=f"the job needed more than the {budget_mb:,} MB one job may use: ask for fewer "
        "samples or classes, or a smaller batch_size",
    )


def _retrying(write: Callable[[], T], patience: float = 300.0) -> T:
    """A final write must not be lost to a store that is briefly away (Redis restarting)."""
    deadline, pause = time.monotonic() + patience, 0.5
    while True:
        try:
            return write()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            log.warning("store unavailable; retrying the final write in %.1fs", pause)
            time.sleep(pause)
            pause = min(pause * 2, 10.0)
