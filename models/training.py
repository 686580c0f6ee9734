"""The training loop shared by every method: progress, cooperative stop, checkpoints.

`train` runs `method.step` until the method has made `steps` steps in total, or until the
method says it is `finished` (the adaptive recipe's controller saw its targets met on probe
batches), so calling it again on a method restored from a checkpoint finishes the same run.
Labels come from the method's own seeded RNG (part of its state): on the CPU a resumed run
ends with exactly the weights, and so the samples, of an uninterrupted one.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from models.contracts.verdict import TrainingOutcome
from models.control import ProbeReport
from models.methods import InversionMethod

__all__ = [
    "InversionFailed",
    "StepReport",
    "TrainResult",
    "TrainingDiverged",
    "load_state",
    "save_state",
    "train",
    "training_outcome",
]

logger = logging.getLogger(__name__)

CONFIDENT_WINDOW = 20  # steps averaged into the running confident share


class InversionFailed(ValueError):
    """A run cannot produce what was asked of it; the message tells the user why and what to
    try (raised by the engine, shown verbatim by the service and the CLI)."""


class TrainingDiverged(InversionFailed):
    """The losses stopped being finite."""


@dataclass(frozen=True)
class StepReport:
    """How training goes, reported to `train`'s caller (the audit turns it into `Progress`)."""

    step: int  # steps made so far (after this report's step)
    total_steps: int
    losses: dict[str, float]  # the last step's named losses and "total"
    confident_share: float  # share of training samples at p_y ≥ 0.99, last 20 steps
    elapsed_s: float = 0.0  # wall time of this call to `train`
    probe: ProbeReport | None = None  # adaptive recipe: the last check's per-class figures
    # (confident share, collapse flags, diversity levels and pulls); None otherwise


@dataclass(frozen=True)
class TrainResult:
    step: int  # the method's step count at the end
    stopped_early: bool  # `should_stop()` said so before `steps` was reached
    seconds: float  # wall time of this call
    losses: dict[str, float] = field(default_factory=dict)  # the last step's losses
    confident_share: float = float("nan")
    stop_reason: str = "budget_spent"  # "targets_met" (adaptive: probes met the targets),
    # "budget_spent", "fixed_recipe" (paper/fade ran their steps), "cancelled", "no_training"
    probe: ProbeReport | None = None  # the last check (adaptive recipe)


def train(
    method: InversionMethod,
    *,
    steps: int,
    classes: Sequence[int] | None = None,
    on_progress: Callable[[StepReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[bytes, int], None] | None = None,
    progress_every_s: float = 1.0,
) -> TrainResult:
    """Step `method` until it has made `steps` steps in total.

    `on_progress` is called at most every `progress_every_s` seconds and after the last
    step; `should_stop()` is checked between steps; `on_checkpoint(state_bytes, step)` gets
    `save_state(method.state_dict())` every `checkpoint_every` steps, after the last step
    and when stopped early (so a stopped job can resume).
    """
    if steps < 0:
        raise ValueError("steps must not be negative")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError("checkpoint_every must be at least 1")
    start = time.perf_counter()
    last_report = float("-inf")
    shares: deque[float] = deque(maxlen=CONFIDENT_WINDOW)
    losses: dict[str, float] = {}
    stopped = False
    checkpointed_at = -1

    def running_share() -> float:
        return sum(shares) / len(shares) if shares else float("nan")

    def checkpoint() -> None:
        nonlocal checkpointed_at
        if on_checkpoint is not None and checkpointed_at != method.step_count:
            on_checkpoint(save_state(method.state_dict()), method.step_count)
            checkpointed_at = method.step_count

    while method.step_count < steps and not method.finished:
        if should_stop is not None and should_stop():
            stopped = True
            break
        began = time.perf_counter()
        labels = method.draw_labels(classes)
        losses = method.step(labels)
        method.trained_seconds += time.perf_counter() - began
        if not math.isfinite(losses.get("total", 0.0)):
            raise TrainingDiverged(
                f"training stopped at step {method.step_count}: the loss is not finite. The "
                f"classifier returns NaN or infinite logits for a batch of {len(labels)} "
                "images: check it with larger batches, or lower the batch_size"
            )
        shares.append(method.last_confident_share)
        now = time.perf_counter()
        done = method.step_count >= steps or method.finished
        if on_progress is not None and (done or now - last_report >= progress_every_s):
            last_report = now
            on_progress(
                StepReport(
                    method.step_count,
                    steps,
                    losses,
                    running_share(),
                    now - start,
                    method.last_probe,
                )
            )
        if checkpoint_every is not None and method.step_count % checkpoint_every == 0:
            checkpoint()
    if checkpoint_every is not None and (stopped or method.step_count >= steps or method.finished):
        checkpoint()
    if stopped:
        reason = "cancelled"
    elif not method.needs_training or steps == 0:
        reason = "no_training"
    elif method.finished:
        reason = "targets_met"
    elif method.controller is None:
        reason = "fixed_recipe"
    else:
        reason = "budget_spent"
    seconds = time.perf_counter() - start
    logger.info(
        "%s: step %d/%d in %.1fs%s",
        method.name,
        method.step_count,
        steps,
        seconds,
        f" ({reason})",
    )
    return TrainResult(
        method.step_count,
        stopped,
        seconds,
        losses,
        running_share(),
        reason,
        method.last_probe,
    )


def training_outcome(method: InversionMethod, result: TrainResult, budget: int) -> TrainingOutcome:
    """The training half of a verdict (`models.contracts.verdict`): why training stopped,
    the steps against the budget, and which classes the last probes still flagged."""
    names = method.classifier.class_names
    probe = result.probe
    collapsed: tuple[str, ...] = ()
    lagging: tuple[str, ...] = ()
    if probe is not None:
        collapsed = tuple(
            names[k] for k, c in zip(probe.classes, probe.collapsed, strict=True) if c
        )
        lagging = tuple(names[k] for k, c in zip(probe.classes, probe.lagging, strict=True) if c)
    return TrainingOutcome(
        stop_reason=result.stop_reason,
        steps=result.step,
        step_budget=budget,
        recipe=method.config.recipe,
        collapsed_on_probes=collapsed,
        lagging_on_probes=lagging,
    )


def save_state(state: dict[str, Any]) -> bytes:
    """A method's `state_dict()` as bytes (torch's zip format, tensors and plain values only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_state(data: bytes, map_location: torch.device | str | None = "cpu") -> dict[str, Any]:
    """Inverse of `save_state`; `weights_only=True`, so it never runs pickled code."""
    state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError("not a method state")
    return state
