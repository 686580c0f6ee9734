"""Run several inversion methods on one classifier and tabulate them (demo and benchmark)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.audit import AuditHooks, AuditResult, Reference, audit
from models.classifier import LoadedClassifier
from models.contracts.artifacts import InversionMetrics
from models.contracts.inversion import InversionConfig

__all__ = ["MethodRun", "format_table", "run_method"]

logger = logging.getLogger(__name__)


@dataclass
class MethodRun:
    label: str  # row name, e.g. "c3" or "c3 (dropout on)"
    result: AuditResult
    samples_per_second: float  # median of timed sampling runs (see run_method)

    @property
    def metrics(self) -> InversionMetrics:
        return self.result.metrics

    @property
    def train_seconds(self) -> float:
        return self.result.method.trained_seconds


def run_method(
    classifier: LoadedClassifier,
    config: InversionConfig,
    per_class: int,
    *,
    reference: Reference | None = None,
    dropout_variants: Sequence[bool] = (False,),
    timing_repeats: int = 3,
    hooks: AuditHooks | None = None,
    device: torch.device | str | None = None,
    sample_seed: int = 1234,
) -> list[MethodRun]:
    """Audit `config.method` on `classifier`, once per dropout variant (the later variants
    sample the generator trained by the first).

    Sampling speed of generator methods is the median of `timing_repeats` timed runs after a
    warm-up; `pixel` is timed once, on the audited samples (each run takes many seconds).
    """
    runs: list[MethodRun] = []
    state: bytes | None = None
    for dropout in dropout_variants:
        result = audit(
            classifier,
            config if state is None else None,
            samples_per_class=per_class,
            reference=reference,
            sample_dropout=dropout,
            sample_seed=sample_seed,
            state=state,
            hooks=hooks,
            device=device,
        )
        state = result.trained_state
        speed = result.metrics.cost.samples_per_second if result.metrics.cost else None
        if result.method.needs_training:
            speed = _sampling_speed(result, dropout, timing_repeats, sample_seed)
        label = config.method + (" (dropout on)" if dropout else "")
        runs.append(MethodRun(label, result, speed or float("inf")))
    return runs


def _sampling_speed(result: AuditResult, dropout: bool, repeats: int, seed: int) -> float:
    """Samples per second of the trained generator: median of `repeats` runs after a warm-up."""
    targets = result.targets
    result.method.sample(targets[: min(len(targets), 200)], dropout=dropout, seed=0)
    timings = []
    for _ in range(max(1, repeats)):
        begin = time.perf_counter()
        result.method.sample(targets, dropout=dropout, seed=seed)
        timings.append(time.perf_counter() - begin)
    seconds = statistics.median(timings)
    return len(targets) / seconds if seconds > 0 else float("inf")


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(runs: Sequence[MethodRun]) -> str:
    """A fixed-width comparison table, one row per run (all figures over all classes)."""
    header = (
        f"{'method':<22}{'train s':>8}{'samples/s':>11}{'p>=0.99':>9}{'argmax':>8}"
        f"{'MSP-AUC':>9}{'kNN-feat':>9}{'kNN-pix':>9}{'NN-train':>10}{'real':>6}"
        f"{'div':>7}{'real':>6}{'min div':>9}{'collapsed':>10}"
    )
    lines = [header, "-" * len(header)]
    for run in runs:
        m = run.metrics.overall
        ratios = [
            c.pixel_diversity / c.reference_pixel_diversity
            for c in run.metrics.per_class.values()
            if c.pixel_diversity is not None and c.reference_pixel_diversity
        ]
        lines.append(
            f"{run.label:<22}{run.train_seconds:>8.1f}{run.samples_per_second:>11,.0f}"
            f"{_fmt(m.confident_share and 100 * m.confident_share, '.1f'):>8}%"
            f"{_fmt(m.argmax_accuracy and 100 * m.argmax_accuracy, '.1f'):>7}%"
            f"{_fmt(m.msp_auroc, '.3f'):>9}{_fmt(m.knn_feature_auroc, '.3f'):>9}"
            f"{_fmt(m.knn_pixel_auroc, '.3f'):>9}{_fmt(m.train_nn_distance, '.2f'):>10}"
            f"{_fmt(m.reference_train_nn_distance, '.2f'):>6}{_fmt(m.pixel_diversity, '.2f'):>7}"
            f"{_fmt(m.reference_pixel_diversity, '.2f'):>6}"
            f"{_fmt(min(ratios) if ratios else None, '.2f'):>8}x"
            f"{len(run.metrics.collapsed_classes):>10}"
        )
    return "\n".join(lines)
