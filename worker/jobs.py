"""The inversion task: claim a job, run the engine with progress, checkpoints and a cancel check,
write the samples and metrics. The logic of inversion lives in `models`; this module moves
bytes between the engine and the stores, and keeps the job record truthful.

A job whose worker died is re-queued by the reaper and claimed again: it resumes from its last
checkpoint, so no step before the checkpoint is done twice, and a follow-up "sampling" job loads
the trained generator of the job it follows instead of training.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from models.config import InversionConfig
from models.device import pick_device
from models.methods import InversionMethod, build_method, build_method_from_state, get_method
from models.metrics import Cost, compute_metrics
from models.ood import audit_report
from models.reference_data import load_canonical
from models.scoring import SampleScore, classifier_outputs, score_samples
from models.training import Progress, load_state, save_state, train
from service.background import Heartbeat, Lease, claim
from service.jobs import events_stream
from service.records import CLASSIFIER, DATASET, JOB
from service.storage import ArtifactNotFound, StoreUnavailable, keys
from worker.classifier_cache import load_cached_classifier
from worker.context import WorkerContext, get_context

log = logging.getLogger(__name__)

T = TypeVar("T")
SAMPLE_CHUNK = 250  # samples drawn per call, so progress and cancel are seen while sampling
TOP_K = 5


class JobFailed(Exception):
    """The job cannot succeed; the message tells the user why."""


class Stopped(Exception):
    """Cancelled by the user, or the lease was lost (another worker owns the job now)."""


@dataclass
class JobRun:
    ctx: WorkerContext
    lease: Lease
    job: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    steps_done: int = 0
    engine_seconds: float = 0.0  # time inside the engine (models), for the overhead figure
    service_seconds: float = 0.0  # progress and checkpoint writes made from engine callbacks

    @contextlib.contextmanager
    def engine(self) -> Iterator[None]:
        """Count the time of the block as engine time, less the callbacks' service work."""
        start, service_before = time.perf_counter(), self.service_seconds
        try:
            yield
        finally:
            spent = time.perf_counter() - start - (self.service_seconds - service_before)
            self.engine_seconds += spent

    @contextlib.contextmanager
    def service_work(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.service_seconds += time.perf_counter() - start

    @property
    def tenant(self) -> str:
        return str(self.job["tenant"])

    @property
    def attempt(self) -> int:
        return int(self.job["task"]["attempts"])

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set()

    # -- writing to the record --------------------------------------------------------------
    def update(self, **changes: Any) -> None:
        if self.lost.is_set():
            raise Stopped("lease lost")
        if self.lease.update(self.ctx.stores.jobs, lambda d: {**d, **changes}) is None:
            self.lost.set()
            raise Stopped("lease lost")

    def event(self, event: dict[str, Any]) -> None:
        self.ctx.stores.jobs.append_event(
            events_stream(self.job["id"]), {**event, "attempt": self.attempt, "t": time.time()}
        )

    def report(
        self,
        phase: str,
        step: int,
        total: int,
        losses: dict[str, float],
        confident: float | None,
        rate: float | None,
    ) -> None:
        remaining = total - step
        progress = {
            "phase": phase,
            "step": step,
            "total_steps": total,
            "fraction": step / total if total else 1.0,
            "losses": {k: v for k, v in losses.items() if math.isfinite(v)},
            "confident_share": confident
            if confident is not None and math.isfinite(confident)
            else None,
            "steps_per_second": rate,
            "eta_seconds": remaining / rate if rate else None,
            "updated_at": time.time(),
        }
        with self.service_work():
            try:
                self.update(progress=progress)
                self.event({"type": "progress", **progress})
            except StoreUnavailable as exc:  # transient (e.g. Redis restarting): report later
                log.warning("job %s: progress not recorded: %s", self.job["id"], exc)
        if self.should_stop():
            raise Stopped("stop requested")

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        settings = self.ctx.settings
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        device = pick_device(settings.device)
        self.report("loading", 0, 1, {}, None, None)
        classifier = self._classifier(device)
        method, trained_seconds = self._method(classifier, device)
        labels = torch.tensor(
            [c for c in self.job["params"]["classes"]
             for _ in range(self.job["params"]["samples_per_class"])]
        )  # fmt: skip
        images, sampling_seconds = self._sample(method, labels)
        self.steps_done = method.step_count
        return self._write_results(
            classifier, images, labels, trained_seconds, sampling_seconds, method.step_count
        )

    def _classifier(self, device: torch.device) -> Any:
        doc = self.ctx.stores.jobs.get(CLASSIFIER, self.job["classifier_id"])
        if doc is None or doc["state"] != "ready":
            raise JobFailed(f"classifier {self.job['classifier_id']} no longer exists")
        with self.engine():
            return load_cached_classifier(self.ctx, doc, device)

    def config(self) -> InversionConfig:
        params, method = self.job["params"], self.job["method"]
        pixel = method == "pixel"
        cfg: dict[str, Any] = {"method": method, "seed": params["seed"]}
        if params.get("steps"):
            cfg["pixel_steps" if pixel else "steps"] = params["steps"]
        if params.get("batch_size"):
            cfg["pixel_batch_size" if pixel else "batch_size"] = params["batch_size"]
        if params.get("loss_weights"):
            cfg["weights"] = {
                **get_method(method).default_weights().to_dict(),
                **params["loss_weights"],
            }
        try:
            return InversionConfig.from_dict(cfg)
        except ValueError as exc:
            raise JobFailed(f"invalid job settings: {exc}") from exc

    def _method(self, classifier: Any, device: torch.device) -> tuple[InversionMethod, float]:
        artifacts = self.ctx.stores.artifacts
        if self.job["kind"] == "sampling":
            try:
                state = load_state(
                    artifacts.get(keys.job_generator(self.tenant, self.job["parent_id"])), device
                )
            except ArtifactNotFound:
                raise JobFailed(
                    f"the trained generator of job {self.job['parent_id']} is gone"
                ) from None
            return build_method_from_state(classifier, state, device), 0.0
        checkpoint_key = keys.job_checkpoint(self.tenant, self.job["id"])
        config = self.config()
        if artifacts.exists(checkpoint_key):
            method = build_method_from_state(
                classifier, load_state(artifacts.get(checkpoint_key), device), device
            )
            log.info("job %s resumes from step %d", self.job["id"], method.step_count)
        else:
            with self.engine():
                method = build_method(classifier, config, device)
        resumed_from = method.step_count
        seconds_before = (
            self.job.get("training_seconds_at_checkpoint", 0.0) if resumed_from else 0.0
        )
        self.update(resumed_from_step=resumed_from)
        if not method.needs_training:
            return method, 0.0
        total = config.step_budget
        train_start = time.perf_counter()

        def on_progress(p: Progress) -> None:
            rate = (p.step - resumed_from) / p.elapsed_s if p.elapsed_s > 0 else None
            self.report("training", p.step, total, p.losses, p.confident_share, rate)

        def on_checkpoint(state: bytes, step: int) -> None:
            if self.lost.is_set():
                return
            with self.service_work():
                save_checkpoint(state, step)

        def save_checkpoint(state: bytes, step: int) -> None:
            artifacts.put(checkpoint_key, state)
            elapsed = time.perf_counter() - train_start
            try:
                self.update(
                    checkpoint_step=step, training_seconds_at_checkpoint=seconds_before + elapsed
                )
            except StoreUnavailable as exc:  # the blob is what a resume reads; the record waits
                log.warning("job %s: checkpoint step not recorded: %s", self.job["id"], exc)

        with self.engine():
            result = train(
                method,
                steps=total,
                classes=self.job["params"]["classes"],
                on_progress=on_progress,
                should_stop=self.should_stop,
                checkpoint_every=self.ctx.settings.checkpoint_every_steps,
                on_checkpoint=on_checkpoint,
                progress_every_s=self.ctx.settings.progress_every_seconds,
            )
        if result.stopped_early:
            raise Stopped("stop requested")
        self.update(steps_this_attempt=result.step - resumed_from)
        artifacts.put(
            keys.job_generator(self.tenant, self.job["id"]), save_state(method.state_dict())
        )
        return method, seconds_before + result.seconds

    def _sample(self, method: InversionMethod, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        params = self.job["params"]
        chunks, start = [], time.perf_counter()
        total = len(labels)
        for i, chunk in enumerate(labels.split(SAMPLE_CHUNK)):
            with self.engine():
                seed = params["seed"] + i
                chunks.append(method.sample(chunk, dropout=params["sample_dropout"], seed=seed))
            done = sum(len(c) for c in chunks)
            elapsed = time.perf_counter() - start
            self.report("sampling", done, total, {}, None, done / elapsed if elapsed else None)
        return torch.cat(chunks).cpu(), time.perf_counter() - start

    def _write_results(
        self,
        classifier: Any,
        images: torch.Tensor,
        labels: torch.Tensor,
        training_seconds: float,
        sampling_seconds: float,
        steps: int,
    ) -> dict[str, Any]:
        self.report("metrics", 0, 1, {}, None, None)
        delivered = (images.clamp(0, 1) * 255).round() / 255  # exactly what the PNGs will hold
        reference_x, reference_y = self._reference()
        cost = Cost(
            train_seconds=training_seconds,
            steps=steps,
            sample_seconds=sampling_seconds,
            samples_per_second=len(labels) / sampling_seconds if sampling_seconds else None,
            device=str(next(iter(classifier.buffers())).device),
        )
        with self.engine():
            metrics = compute_metrics(
                classifier, delivered, labels, reference_x=reference_x,
                reference_y=reference_y, cost=cost,
            )  # fmt: skip
            outputs = metrics.counterfeit_outputs or classifier_outputs(classifier, delivered)
            records = score_samples(classifier, delivered, labels, top_k=TOP_K, outputs=outputs)
            report = audit_report(outputs, metrics.reference_outputs, reference_y)
        self.report("saving", 0, 1, {}, None, None)
        self._save(delivered, labels, records, metrics.to_dict(), report)
        summary: dict[str, Any] = metrics.to_dict()["overall"]
        return summary

    def _reference(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        dataset_id = self.job.get("dataset_id")
        if not dataset_id:
            return None, None
        doc = self.ctx.stores.jobs.get(DATASET, dataset_id)
        if doc is None:
            raise JobFailed(f"reference dataset {dataset_id} no longer exists")
        ref = load_canonical(
            self.ctx.stores.artifacts.get(keys.dataset_canonical(self.tenant, dataset_id))
        )
        y = None if ref.y is None else torch.from_numpy(ref.y)
        return torch.from_numpy(ref.as_float()), y

    def _save(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        records: list[SampleScore],
        metrics: dict[str, Any],
        report: dict[str, Any],
    ) -> None:
        artifacts, tenant, id = self.ctx.stores.artifacts, self.tenant, self.job["id"]
        index = [
            {"index": r.index, "target": r.target, "predicted": r.predicted,
             "confidence": r.confidence, "top_k": r.top_k}
            for r in records
        ]  # fmt: skip
        artifacts.put(keys.job_samples_json(tenant, id), json.dumps(index).encode())
        artifacts.put(keys.job_metrics_json(tenant, id), json.dumps(metrics, indent=1).encode())
        artifacts.put(keys.job_report_json(tenant, id), json.dumps(report).encode())
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            x=(images * 255).round().to(torch.uint8).numpy(),
            targets=labels.numpy(),
            predicted=np.array([r.predicted for r in records]),
            confidence=np.array([r.confidence for r in records], dtype=np.float32),
        )
        artifacts.put(keys.job_samples_npz(tenant, id), buffer.getvalue())


def run_job(job_id: str) -> None:
    ctx = get_context()
    store = ctx.stores.jobs
    claimed = claim(store, JOB, job_id, max_attempts=ctx.settings.max_attempts)
    if claimed is None:
        log.info("job %s: not queued (duplicate message, cancelled or done)", job_id)
        return
    lease, job = claimed
    run = JobRun(ctx, lease, job)
    run.update(started_at=job.get("started_at") or time.time())
    run.event({"type": "state", "state": "running"})

    def on_renew(doc: dict[str, Any]) -> None:
        if doc.get("cancel_requested"):
            run.cancel.set()

    final: dict[str, Any]
    with Heartbeat(store, lease, ctx.settings.heartbeat_seconds, on_renew) as beat:
        run.lost = beat.lost
        try:
            final = {"state": "succeeded", "metrics": run.run(), "steps_done": run.steps_done}
            final["engine_seconds"] = run.engine_seconds
        except Stopped:
            if run.lost.is_set():
                log.warning("job %s: lease lost, leaving it to its new owner", job_id)
                return
            final = {"state": "cancelled"}
        except JobFailed as exc:
            final = {"state": "failed", "error": {"title": "Job failed", "detail": str(exc)}}
        except Exception as exc:
            log.exception("job %s failed", job_id)
            detail = f"{type(exc).__name__}: {exc}"
            final = {"state": "failed", "error": {"title": "Internal error", "detail": detail}}
    if _retrying(lambda: lease.finish(store, lambda doc: _finished(doc, final))) is not None:
        _retrying(
            lambda: run.event(
                {"type": "state", "state": final["state"], "error": final.get("error")}
            )
        )
        if final["state"] == "succeeded":  # failed or cancelled jobs keep it, to be resumed
            ctx.stores.artifacts.delete_prefix(keys.job_checkpoint(job["tenant"], job_id))


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


def _finished(doc: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    doc.update(final, finished_at=time.time())
    if final["state"] == "succeeded":
        params = doc["params"]
        doc["sample_count"] = len(params["classes"]) * params["samples_per_class"]
        steps = doc.pop("steps_done")
        if doc.get("progress"):
            doc["progress"].update(
                phase="done", step=steps, total_steps=steps, fraction=1.0, eta_seconds=0.0
            )
    return doc
