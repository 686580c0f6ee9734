"""Record documents: ids, timestamps and the fields every record shares. The job store indexes
`id`, `tenant`, `state` and `created_at`; everything else is the kind's own business."""

from __future__ import annotations

import secrets
import time
from typing import Any

from service.background import new_task

CLASSIFIER, DATASET, JOB = "classifier", "dataset", "job"
ACTIVE_JOB_STATES = ("queued", "running")
FINISHED_JOB_STATES = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    """Sortable by creation time (hex milliseconds), then random: `job_0193a1…`."""
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


def new_record(tenant: str, id: str, state: str, **fields: Any) -> dict[str, Any]:
    """A record whose work waits for a worker (validation or a job)."""
    return {
        "id": id,
        "tenant": tenant,
        "state": state,
        "created_at": time.time(),
        "task": new_task(),
        "error": None,
        **fields,
    }


SPEC_FIELDS = (
    "format", "input_shape", "class_names", "mean", "std", "architecture", "architecture_config"
)  # fmt: skip


def classifier_spec_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields of a classifier record that make the engine's `ClassifierSpec`."""
    return {name: doc.get(name) for name in SPEC_FIELDS}
