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
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    SamplesWriter,
)
from models.contracts.inversion import InversionConfig
from models.contracts.verdict import TrainingOutcome, Verdict, build_verdict
from models.feature_prior import build_prior, split_reference
from models.methods import InversionMethod, build_method, build_method_from_state
from models.metrics import MetricsBuilder
from models.ood import audit_figures, evasion
from models.scoring import ClassifierOutputs, score_samples
from models.training import (
    InversionFailed,
    StepReport,
    TrainResult,
    load_state,
    save_state,
    train,
    training_outcome,
)

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
    samples_file: Path  # samples.npz: the delivered 8-bit pixels and their verdicts
    folder: tempfile.TemporaryDirectory[str] = field(repr=False)  # holds it; removed with it
    metrics: InversionMetrics
    figures: AuditFigures
    trained_state: bytes | None  # the final method state (None for pixel: nothing trained)
    resumed_from_step: int  # the step the method state started at (> 0: a resume)
    engine_seconds: float  # wall time of the audit, less the time spent in hooks
    training: TrainingOutcome | None = None  # why training stopped; None: no training

    @property
    def verdict(self) -> Verdict:
        """Which targets the run met, which it missed and what to try (in report.json)."""
        assert self.figures.verdict is not None  # audit() always sets it
        return self.figures.verdict

    @property
    def images(self) -> torch.Tensor:
        """The delivered samples as [0, 1] floats (n, C, H, W), read back from samples.npz
        (for pictures of a run: this holds them all)."""
        return torch.from_numpy(SamplesArrays.from_npz(self.samples_file).x).float() / 255.0

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor([s.target for s in self.samples], dtype=torch.long)

    def artifacts(self) -> dict[ArtifactName, bytes | Path]:
        """The files of the run, by name: what the worker stores and `c3 invert` writes
        (samples.npz as the file it was streamed to)."""
        return {
            ArtifactName.SAMPLES_JSON: SampleIndex.dump_json(self.samples),
            ArtifactName.SAMPLES_NPZ: self.samples_file,
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
    step_limit: int | None = None,
) -> AuditResult:
    """Invert `classifier` with `config` and audit the counterfeits.

    `state` (a checkpoint or a finished run's `trained_state`) continues that run instead of
    starting one: its config is the run's (`config`, when also given, must equal it). Sampling
    draws `samples_per_class` for each of `classes` (default: all) from seeds
    `sample_seed + chunk` (default: the config's seed). Raises `Stopped` when
    `hooks.should_stop()` says so. The verdict's suggestions keep the step budget under
    `step_limit` (a service's limit).
    """
    hooks = hooks or AuditHooks()
    start = time.perf_counter()
    method = _method(classifier, config, state, device)
    config = method.config
    resumed_from = method.step_count
    halves = _detector_halves(method, reference)

    # train
    training = None
    if method.needs_training:
        training = training_outcome(method, _train(method, classes, hooks), config.steps)

    # sample and deliver a class at a time: its pixels go to samples.npz and to the metrics,
    # then are let go (a job holds one class of images, whatever its size)
    classes = list(range(classifier.num_classes)) if classes is None else list(classes)
    targets = torch.tensor(classes, dtype=torch.long).repeat_interleave(samples_per_class)
    folder = tempfile.TemporaryDirectory(prefix="c3-audit-")
    writer = SamplesWriter(
        Path(folder.name) / ArtifactName.SAMPLES_NPZ, len(targets), method.input_shape
    )
    try:
        builder = MetricsBuilder(
            classifier,
            None if reference is None else reference.x,
            None if reference is None else reference.y,
            train_x=None if reference is None else reference.train_x,
            batch_size=config.batch_size,  # the batch the job was admitted at (contracts.cost)
        )
        sampler = _Sampler(method, targets, sample_dropout, sample_seed, hooks)
        for label in classes:
            pixels = sampler.next_class(label, samples_per_class)
            writer.write(pixels.numpy())
            at = torch.arange(sampler.done - len(pixels), sampler.done)
            builder.add_class(label, pixels.float() / 255.0, at)  # exactly what the PNGs hold

        # measure, score, tabulate the evasion
        hooks.progress(_phase(Phase.METRICS))
        cost = Cost(
            train_seconds=method.trained_seconds,
            steps=method.step_count,
            sample_seconds=sampler.seconds,
            samples_per_second=len(targets) / sampler.seconds if sampler.seconds > 0 else None,
            device=str(method.device),
        )
        measured = builder.finish(cost)
        logits = measured.counterfeit_outputs.logits
        if not torch.isfinite(logits).all():
            bad = int((~torch.isfinite(logits).all(dim=1)).sum())
            raise InversionFailed(
                f"the classifier returns NaN or infinite logits for {bad} of the {len(logits)} "
                "counterfeits: it cannot be audited as it is (check it on larger batches)"
            )
        figures_start = time.perf_counter()
        samples = score_samples(targets, measured.counterfeit_outputs, TOP_K)
        figures = _report_figures(
            measured.counterfeit_outputs,
            measured.reference_outputs,
            None if reference is None else reference.y,
            halves,
        )
        verdict = build_verdict(
            measured.metrics, training, config.targets, method=config.method, step_limit=step_limit
        )
        figures = figures.model_copy(update={"verdict": verdict})
        metrics = _with_figure_seconds(measured.metrics, time.perf_counter() - figures_start)
        writer.close(
            targets.numpy(),
            np.array([s.predicted for s in samples], dtype=np.int64),
            np.array([s.confidence for s in samples], dtype=np.float32),
        )
    except BaseException:  # stopped or failed: no half-written archive is left open
        writer.abort()
        folder.cleanup()
        raise
    return AuditResult(
        method=method,
        samples=samples,
        samples_file=writer.path,
        folder=folder,
        metrics=metrics,
        figures=figures,
        trained_state=save_state(method.state_dict()) if method.needs_training else None,
        resumed_from_step=resumed_from,
        engine_seconds=time.perf_counter() - start - hooks.seconds,
        training=training,
    )


def _with_figure_seconds(metrics: InversionMetrics, seconds: float) -> InversionMetrics:
    """`metrics` whose cost counts `seconds` more of figures (records, detectors, verdict)."""
    cost = metrics.cost
    if cost is None:
        return metrics
    spent = (cost.metrics_seconds or 0.0) + seconds
    return metrics.model_copy(update={"cost": cost.model_copy(update={"metrics_seconds": spent})})


def _report_figures(
    counterfeits: ClassifierOutputs,
    real: ClassifierOutputs | None,
    real_y: torch.Tensor | None,
    halves: torch.Tensor | None,
) -> AuditFigures:
    """report.json's figures. A detector-aware run (`halves`: its evaluation half) is scored on
    that half only, never on the generator's; a plain run on the whole reference set, and again
    on the same evaluation half (`held_out_evasion`), where plain and detector-aware runs on
    one reference set compare (issue 15)."""
    if real is None:
        return audit_figures(counterfeits)
    if halves is not None:
        figures = audit_figures(counterfeits, real.rows(halves), _rows(real_y, halves))
        return figures.model_copy(update={"held_out_evasion": figures.ood})  # the same table
    _, evaluation_half = split_reference(len(real.logits))  # the split detector-aware runs use
    held_out = evasion(counterfeits, real.rows(evaluation_half), _rows(real_y, evaluation_half))
    figures = audit_figures(counterfeits, real, real_y)
    return figures.model_copy(update={"held_out_evasion": held_out})


def _rows(labels: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if labels is None else labels[index]


def _detector_halves(method: InversionMethod, reference: Reference | None) -> torch.Tensor | None:
    """Detector-aware c3: give `method` its prior from the generator half of the reference set
    and return the evaluation half's indices; or from the classifier alone (without a
    reference set, or when `prior_source` asks for it) and return None."""
    if not method.config.detectors:
        return None
    if reference is None or method.config.prior_source == "classifier":
        prior = build_prior(method.classifier, quantile=method.config.prior_quantile)
        if not prior.terms:
            raise InversionFailed(
                "detector-aware c3 needs a reference set (dataset_id, with prior_source "
                "reference) for this classifier: it has no BatchNorm statistics to stand in "
                "for real features"
            )
        method.use_prior(prior)
        return None  # the reference set, if any, only scores: on the usual evaluation half
    generator_half, evaluation_half = split_reference(len(reference.x))  # one split per set
    method.use_prior(
        build_prior(
            method.classifier,
            reference.x[generator_half],
            None if reference.y is None else reference.y[generator_half],
            quantile=method.config.prior_quantile,
        )
    )
    return evaluation_half


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
    if config is not None and config.width is None:  # the method resolved it (generator_width)
        config = config.model_copy(update={"width": method.config.width})
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
                stops_early=method.config.adaptive,
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


class _Sampler:
    """Draws the delivered pixels (uint8) class by class, in chunks of SAMPLE_CHUNK (chunk i
    seeded `seed + i`), reporting progress and heeding a stop request between chunks."""

    def __init__(
        self,
        method: InversionMethod,
        targets: torch.Tensor,
        dropout: bool,
        seed: int | None,
        hooks: AuditHooks,
    ) -> None:
        self._method, self._total, self._dropout, self._hooks = method, len(targets), dropout, hooks
        self._seed = method.config.seed if seed is None else seed
        self._chunks = 0
        self.done = 0
        self.seconds = 0.0  # drawing time, less the hooks'

    def next_class(self, label: int, count: int) -> torch.Tensor:
        labels = torch.full((count,), label, dtype=torch.long)
        drawn: list[torch.Tensor] = []
        for chunk in labels.split(SAMPLE_CHUNK):
            if self._hooks.stop_requested():
                raise Stopped("stopped while sampling")
            start = time.perf_counter()
            drawn.append(
                deliver(
                    self._method.sample(
                        chunk, dropout=self._dropout, seed=self._seed + self._chunks
                    )
                )
            )
            self.seconds += time.perf_counter() - start
            self._chunks += 1
            self.done += len(chunk)
            rate = self.done / self.seconds if self.seconds > 0 else None
            self._hooks.progress(
                Progress(
                    phase=Phase.SAMPLING,
                    step=self.done,
                    total_steps=self._total,
                    fraction=self.done / self._total,
                    steps_per_second=rate,
                    eta_seconds=(self._total - self.done) / rate if rate else None,
                    updated_at=time.time(),
                )
            )
        if not drawn:
            return torch.empty(0, *self._method.input_shape, dtype=torch.uint8)
        return torch.cat(drawn)


def _phase(phase: Phase) -> Progress:
    """A progress report for a phase without steps of its own."""
    return Progress(phase=phase, step=0, total_steps=1, fraction=0.0, updated_at=time.time())
