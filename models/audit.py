"""The engine's one entry point: a frozen classifier and a configuration in, an audit out.

`audit` reads top to bottom like nanoGPT's train.py: build (or restore) the method, train it,
sample, deliver (8-bit pixels, exactly what a PNG holds), score every sample, measure, and
tabulate the OOD-detector evasion. The worker, `c3 invert`, the demo and the benchmarks all
call it, so a service job and an offline run produce the same files with the same schema
(`AuditResult.artifacts()`, see `models.contracts.artifacts`). Callers observe and steer it
through `AuditHooks` (progress, cooperative stop, checkpoints); the time those hooks take is
not counted as engine time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from models.classifier import LoadedClassifier
from models.contracts.artifacts import (
    ArtifactName,
    AuditFigures,
    Cost,
    InversionMetrics,
    Phase,
    ProbeFigures,
    Progress,
    SampleIndex,
    SampleRecord,
    SamplesArrays,
)
from models.contracts.inversion import InversionConfig
from models.methods import InversionMethod, build_method, build_method_from_state
from models.metrics import compute_metrics
from models.ood import audit_figures
from models.scoring import score_samples
from models.training import (
    InversionFailed,
    StepReport,
    TrainResult,
    load_state,
    save_state,
    train,
    training_outcome,
)
from models.verdict import TrainingOutcome

__all__ = [
    "AuditHooks",
    "AuditResult",
    "InversionFailed",
    "Reference",
    "Stopped",
    "audit",
    "deliver",
]

logger = logging.getLogger(__name__)

SAMPLE_CHUNK = 250  # samples drawn per call: progress and stop requests are seen while sampling
TOP_K = 5


class Stopped(Exception):
    """`should_stop()` asked the audit to stop; training state was checkpointed first."""


@dataclass(frozen=True)
class Reference:
    """Real images for the distinctness figures and the evasion table."""

    x: torch.Tensor  # (m, C, H, W) in [0, 1]
    y: torch.Tensor | None = None  # (m,) labels, for per-class comparisons
    train_x: torch.Tensor | None = None  # training images: distance to the nearest one (benches)


@dataclass
class AuditHooks:
    """How a caller follows and steers an audit. Every hook is optional."""

    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_checkpoint: Callable[[bytes, int], None] | None = None  # (method state, step)
    checkpoint_every: int | None = None  # steps between checkpoints
    progress_every_s: float = 1.0
    seconds: float = field(default=0.0, init=False)  # time spent inside the hooks

    def _timed(self, call: Callable[[], object]) -> None:
        start = time.perf_counter()
        try:
            call()
        finally:
            self.seconds += time.perf_counter() - start

    def progress(self, progress: Progress) -> None:
        if self.on_progress is not None:
            on_progress = self.on_progress
            self._timed(lambda: on_progress(progress))

    def stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def checkpoint(self, state: bytes, step: int) -> None:
        if self.on_checkpoint is not None:
            on_checkpoint = self.on_checkpoint
            self._timed(lambda: on_checkpoint(state, step))


@dataclass
class AuditResult:
    method: InversionMethod  # trained: more samples can be drawn from it
    samples: list[SampleRecord]
    arrays: SamplesArrays  # the delivered 8-bit pixels and their verdicts
    metrics: InversionMetrics
    figures: AuditFigures
    trained_state: bytes | None  # the final method state (None for pixel: nothing trained)
    resumed_from_step: int  # the step the method state started at (> 0: a resume)
    engine_seconds: float  # wall time of the audit, less the time spent in hooks
    training: TrainingOutcome | None = None  # why training stopped, for the verdict
    # (models.verdict.build_verdict(metrics.model_dump(), training)); None: no training

    @property
    def images(self) -> torch.Tensor:
        """The delivered samples as [0, 1] floats (n, C, H, W)."""
        return torch.from_numpy(self.arrays.x).float() / 255.0

    @property
    def targets(self) -> torch.Tensor:
        return torch.from_numpy(self.arrays.targets)

    def artifacts(self) -> dict[ArtifactName, bytes]:
        """The files of the run, by name: what the worker stores and `c3 invert` writes."""
        return {
            ArtifactName.SAMPLES_JSON: SampleIndex.dump_json(self.samples),
            ArtifactName.SAMPLES_NPZ: self.arrays.to_npz(),
            ArtifactName.METRICS_JSON: self.metrics.model_dump_json(indent=1).encode(),
            ArtifactName.REPORT_JSON: self.figures.model_dump_json().encode(),
        }


def deliver(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats → uint8 (n, C, H, W): the pixels a PNG of these images holds."""
    return (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def audit(
    classifier: LoadedClassifier,
    config: InversionConfig | None = None,
    *,
    classes: Sequence[int] | None = None,
    samples_per_class: int = 100,
    reference: Reference | None = None,
    sample_dropout: bool = False,
    sample_seed: int | None = None,
    state: bytes | None = None,
    hooks: AuditHooks | None = None,
    device: torch.device | str | None = None,
) -> AuditResult:
    """Invert `classifier` with `config` and audit the counterfeits.

    `state` (a checkpoint or a finished run's `trained_state`) continues that run instead of
    starting one: its config is the run's (`config`, when also given, must equal it). Sampling
    draws `samples_per_class` for each of `classes` (default: all) from seeds
    `sample_seed + chunk` (default: the config's seed). Raises `Stopped` when
    `hooks.should_stop()` says so.
    """
    hooks = hooks or AuditHooks()
    start = time.perf_counter()
    method = _method(classifier, config, state, device)
    config = method.config
    resumed_from = method.step_count

    # train
    training = None
    if method.needs_training:
        training = training_outcome(method, _train(method, classes, hooks), config.steps)

    # sample, deliver
    classes = list(range(classifier.num_classes)) if classes is None else list(classes)
    targets = torch.tensor(classes, dtype=torch.long).repeat_interleave(samples_per_class)
    seed = config.seed if sample_seed is None else sample_seed
    sampling_start, hooks_before = time.perf_counter(), hooks.seconds
    pixels = _sample(method, targets, sample_dropout, seed, hooks)
    sample_seconds = time.perf_counter() - sampling_start - (hooks.seconds - hooks_before)
    delivered = pixels.float() / 255.0  # exactly what the PNGs hold: scored as such

    # score, measure, tabulate the evasion
    hooks.progress(_phase(Phase.METRICS))
    cost = Cost(
        train_seconds=method.trained_seconds,
        steps=method.step_count,
        sample_seconds=sample_seconds,
        samples_per_second=len(targets) / sample_seconds if sample_seconds > 0 else None,
        device=str(method.device),
    )
    measured = compute_metrics(
        classifier,
        delivered,
        targets,
        reference_x=None if reference is None else reference.x,
        reference_y=None if reference is None else reference.y,
        cost=cost,
        train_x=None if reference is None else reference.train_x,
        batch_size=config.batch_size,  # the batch the job was admitted at (contracts.cost)
    )
    logits = measured.counterfeit_outputs.logits
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits).all(dim=1)).sum())
        raise InversionFailed(
            f"the classifier returns NaN or infinite logits for {bad} of the {len(logits)} "
            "counterfeits: it cannot be audited as it is (check it on larger batches)"
        )
    samples = score_samples(classifier, delivered, targets, TOP_K, measured.counterfeit_outputs)
    figures = audit_figures(
        measured.counterfeit_outputs,
        measured.reference_outputs,
        None if reference is None else reference.y,
    )
    arrays = SamplesArrays(
        x=pixels.numpy(),
        targets=targets.numpy(),
        predicted=np.array([s.predicted for s in samples], dtype=np.int64),
        confidence=np.array([s.confidence for s in samples], dtype=np.float32),
    )
    return AuditResult(
        method=method,
        samples=samples,
        arrays=arrays,
        metrics=measured.metrics,
        figures=figures,
        trained_state=save_state(method.state_dict()) if method.needs_training else None,
        resumed_from_step=resumed_from,
        engine_seconds=time.perf_counter() - start - hooks.seconds,
        training=training,
    )


def _method(
    classifier: LoadedClassifier,
    config: InversionConfig | None,
    state: bytes | None,
    device: torch.device | str | None,
) -> InversionMethod:
    if state is None:
        if config is None:
            raise ValueError("give a config, or the state of a run to continue")
        return build_method(classifier, config, device)
    method = build_method_from_state(classifier, load_state(state, device or "cpu"), device)
    if config is not None and config != method.config:
        raise ValueError("the state was saved with another config than the one given")
    logger.info("%s continues from step %d", method.name, method.step_count)
    return method


def _train(
    method: InversionMethod, classes: Sequence[int] | None, hooks: AuditHooks
) -> TrainResult:
    total, resumed_from = method.config.steps, method.step_count

    def on_step(report: StepReport) -> None:
        rate = (report.step - resumed_from) / report.elapsed_s if report.elapsed_s > 0 else None
        hooks.progress(
            Progress(
                phase=Phase.TRAINING,
                step=report.step,
                total_steps=total,
                fraction=report.step / total if total else 1.0,
                losses=report.losses,
                confident_share=report.confident_share,
                steps_per_second=rate,
                eta_seconds=(total - report.step) / rate if rate else None,
                updated_at=time.time(),
                probe=None
                if report.probe is None
                else ProbeFigures.model_validate(report.probe.to_dict()),
            )
        )

    result = train(
        method,
        steps=total,
        classes=classes,
        on_progress=on_step,
        should_stop=hooks.stop_requested,
        checkpoint_every=hooks.checkpoint_every,
        on_checkpoint=hooks.checkpoint if hooks.on_checkpoint is not None else None,
        progress_every_s=hooks.progress_every_s,
    )
    if result.stopped_early:
        raise Stopped(f"stopped at step {result.step}")
    return result


def _sample(
    method: InversionMethod,
    targets: torch.Tensor,
    dropout: bool,
    seed: int,
    hooks: AuditHooks,
) -> torch.Tensor:
    """Delivered pixels (n, C, H, W) uint8, drawn in chunks of SAMPLE_CHUNK."""
    chunks: list[torch.Tensor] = []
    done, start = 0, time.perf_counter()
    for i, chunk in enumerate(targets.split(SAMPLE_CHUNK)):
        if hooks.stop_requested():
            raise Stopped("stopped while sampling")
        chunks.append(deliver(method.sample(chunk, dropout=dropout, seed=seed + i)))
        done += len(chunk)
        elapsed = time.perf_counter() - start
        rate = done / elapsed if elapsed > 0 else None
        hooks.progress(
            Progress(
                phase=Phase.SAMPLING,
                step=done,
                total_steps=len(targets),
                fraction=done / len(targets),
                steps_per_second=rate,
                eta_seconds=(len(targets) - done) / rate if rate else None,
                updated_at=time.time(),
            )
        )
    if not chunks:
        return torch.empty(0, *method.input_shape, dtype=torch.uint8)
    return torch.cat(chunks)


def _phase(phase: Phase) -> Progress:
    """A progress report for a phase without steps of its own."""
    return Progress(phase=phase, step=0, total_steps=1, fraction=0.0, updated_at=time.time())
