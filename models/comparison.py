"""Run several inversion methods on one classifier and tabulate them (demo and benchmark)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from models.classifier import LoadedClassifier
from models.config import InversionConfig
from models.methods import InversionMethod, build_method
from models.metrics import Cost, InversionMetrics, compute_metrics
from models.training import Progress, train

__all__ = ["MethodRun", "format_table", "run_method"]

logger = logging.getLogger(__name__)


@dataclass
class MethodRun:
    label: str  # row name, e.g. "c3" or "c3 (dropout on)"
    method: InversionMethod
    metrics: InversionMetrics
    images: torch.Tensor  # (n, C, H, W) the scored samples
    targets: torch.Tensor  # (n,)
    train_seconds: float
    samples_per_second: float


def run_method(
    classifier: LoadedClassifier,
    config: InversionConfig,
    per_class: int,
    *,
    reference_x: torch.Tensor | None = None,
    reference_y: torch.Tensor | None = None,
    train_x: torch.Tensor | None = None,
    dropout_variants: Sequence[bool] = (False,),
    timing_repeats: int = 3,
    on_progress: Callable[[Progress], None] | None = None,
    device: torch.device | str | None = None,
    sample_seed: int = 1234,
) -> list[MethodRun]:
    """Train `config.method`, sample `per_class` images per class, score them.

    Sampling speed of generator methods is the median of `timing_repeats` timed runs after a
    warm-up; `pixel` is timed once on the scored samples (each run takes many seconds).
    """
    method = build_method(classifier, config, device)
    start = time.perf_counter()
    steps = config.step_budget if method.needs_training else 0
    train(method, steps=steps, on_progress=on_progress)
    train_seconds = time.perf_counter() - start
    targets = torch.arange(classifier.num_classes).repeat_interleave(per_class)
    runs = []
    for dropout in dropout_variants:
        if method.needs_training:
            method.sample(targets[: min(len(targets), 200)], dropout=dropout, seed=0)  # warm-up
            timings = []
            images = torch.empty(0)
            for _ in range(max(1, timing_repeats)):
                begin = time.perf_counter()
                images = method.sample(targets, dropout=dropout, seed=sample_seed)
                timings.append(time.perf_counter() - begin)
            seconds = statistics.median(timings)
        else:
            begin = time.perf_counter()
            images = method.sample(targets, dropout=dropout, seed=sample_seed)
            seconds = time.perf_counter() - begin
        speed = len(targets) / seconds if seconds > 0 else float("inf")
        cost = Cost(
            train_seconds=train_seconds,
            steps=method.step_count,
            sample_seconds=seconds,
            samples_per_second=speed,
            device=str(method.device),
        )
        metrics = compute_metrics(
            classifier, images, targets, reference_x, reference_y, cost, train_x=train_x
        )
        label = config.method + (" (dropout on)" if dropout else "")
        runs.append(MethodRun(label, method, metrics, images, targets, train_seconds, speed))
    return runs


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
