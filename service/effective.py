"""What a job runs with, as people read it: its choices with the method's and the recipe's
defaults filled in by the contracts' own mapping (`InversionParams.config`), never restated here.

The start form's placeholders, the job page, the report's settings and the compare view all
read these, so a default shown is the default that runs.
"""

from __future__ import annotations

from typing import Any

from models.contracts.inversion import METHODS, RECIPES, InversionConfig, InversionParams
from models.contracts.verdict import Verdict
from service.records import JobRecord


def _number(value: float) -> str:
    """A weight or rate as typed: 1, 0.1, 0.002 (no exponent, no trailing zeros)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def active_weights(config: InversionConfig) -> dict[str, float]:
    """The loss terms that take part (weight ≠ 0), in the engine's order."""
    return {k: v for k, v in config.loss_weights.model_dump().items() if v != 0.0}


def defaults_table() -> dict[str, dict[str, dict[str, Any]]]:
    """Steps, batch size and loss weights a blank start form runs with, by method and recipe
    (for the form's placeholders; soft and pixel ignore the recipe)."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for method in METHODS:
        for recipe in RECIPES:
            config = InversionParams(recipe=recipe).config(method)
            table.setdefault(method, {})[recipe] = {
                "steps": config.steps,
                "batch_size": config.batch_size,
                "stops_early": config.adaptive,
                "weights": {k: _number(v) for k, v in config.loss_weights.model_dump().items()},
            }
    return table


def _steps(job: JobRecord, config: InversionConfig, verdict: Verdict | None) -> str:
    if job.kind == "sampling":
        return "none (samples from a trained generator)"
    if job.method == "pixel":
        return f"{config.steps:,} per sample"
    training = verdict.training if verdict is not None else None
    if training is None:
        return f"up to {config.steps:,}" if config.adaptive else f"{config.steps:,}"
    if training.stop_reason == "targets_met":
        return f"up to {config.steps:,}; stopped after {training.steps:,}, the targets held"
    if training.stop_reason == "cancelled":
        return f"{config.steps:,}; stopped from outside after {training.steps:,}"
    return f"{training.steps:,}" + (" (the whole budget)" if config.adaptive else "")


def _given(value: str, chosen: object) -> str:
    return value if chosen is not None else f"{value} (default)"


def job_settings(job: JobRecord) -> dict[str, str]:
    """A job's settings as they ran, by name; "(default)" marks what the request left open."""
    params = job.params
    config = params.config(job.method)
    weights = ", ".join(f"{k} {_number(v)}" for k, v in active_weights(config).items())
    settings = {
        "method": job.method,
        "kind": "more samples" if job.kind == "sampling" else "inversion",
    }
    if job.method == "c3":
        settings["recipe"] = _given(config.recipe, params.recipe)
    settings |= {
        "classes": ", ".join(map(str, params.classes)),
        "samples per class": f"{params.samples_per_class:,}",
        "steps": _given(_steps(job, config, job.verdict), params.steps),
        "batch size": _given(str(config.batch_size), params.batch_size),
        "learning rate": _number(config.pixel_lr if job.method == "pixel" else config.lr),
        "loss weights": _given(weights or "none", params.loss_weights),
        "seed": str(params.seed),
        "sample dropout": "on" if params.sample_dropout else "off",
    }
    if config.adaptive:
        settings["targets"] = (
            f"{config.target_confident_share:.1%} at p ≥ {config.confidence_threshold:g}, "
            f"{config.target_class_confident_share:.1%} in every class"
        )
    return settings
