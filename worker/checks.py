"""The checks that run inside the sandbox (worker.sandbox) on untrusted uploads. Imported by
the sandbox's forkserver up front, with torch and the loaders, so each check starts at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.contracts.classifier import ClassifierSpec
from models.loading import ClassifierRejected, canonical_bytes, check_classifier, load_classifier
from models.profiling import measure_cost
from models.reference_data import (
    DatasetRejected,
    ReferenceLimits,
    read_reference,
    save_reference,
)
from worker.sandbox import Rejected


def check_classifier_upload(
    upload: str, declared: str, canonical: str, memory_budget_mb: int
) -> dict[str, Any]:
    """Load the model as `declared` (a ClassifierSpec as JSON), run forward and backward passes
    (measuring their cost per batch within a quarter of the sandbox's memory), write the
    clean copy."""
    torch.set_num_threads(1)
    spec = ClassifierSpec.model_validate_json(declared)
    data = Path(upload).read_bytes()
    try:
        classifier = load_classifier(data, spec, device=torch.device("cpu"))
        report = check_classifier(classifier)
        cost = measure_cost(classifier, budget_bytes=memory_budget_mb * 2**20 / 4)
        Path(canonical).write_bytes(canonical_bytes(data, spec))
    except ClassifierRejected as exc:
        raise Rejected(str(exc)) from exc
    return {
        "param_count": int(report.param_count),
        "batch_norm_layers": int(report.batch_norm_layers),
        "forward_latency_ms": float(report.forward_latency_ms),
        "cost": cost.model_dump(),
    }


def check_dataset_upload(upload: str, fmt: str, canonical: str, max_bytes: int) -> dict[str, Any]:
    """Read the reference set with every limit (at most `max_bytes` of images unpacked),
    write it back as a plain `.npz`."""
    try:
        ref = read_reference(Path(upload), fmt, ReferenceLimits(max_bytes=max_bytes))
    except DatasetRejected as exc:
        raise Rejected(str(exc)) from exc
    save_reference(ref, Path(canonical))
    return {
        "count": int(ref.x.shape[0]),
        "input_shape": list(ref.shape),
        "has_labels": ref.y is not None,
        "label_max": None if ref.y is None or not len(ref.y) else int(ref.y.max()),
    }
