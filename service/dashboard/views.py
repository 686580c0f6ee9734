"""View models: what the dashboard's pages show, computed from records and artifacts, with no
HTTP or templating in them (the page handlers and templates do that)."""

from __future__ import annotations

import re
from typing import Any

from models.contracts.artifacts import Phase
from models.contracts.inversion import DETECTORS, LossWeights
from service import report
from service.effective import job_settings
from service.errors import InvalidField
from service.glossary import label_of, meaning
from service.records import JobRecord, JobState
from service.registry import parse_form
from service.schemas import InversionCreate

PHASES: dict[str, tuple[float, float]] = {
    Phase.QUEUED: (0.0, 0.0),
    Phase.LOADING: (0.0, 0.02),
    Phase.TRAINING: (0.02, 0.85),
    Phase.SAMPLING: (0.85, 0.95),
    Phase.METRICS: (0.95, 0.98),
    Phase.SAVING: (0.98, 0.99),
    Phase.DONE: (1.0, 1.0),
}
"""Where each phase sits on a job's overall progress bar (start, end); the page's script uses the
same table."""

WEIGHT_NAMES = tuple(LossWeights.model_fields)
"""The start form's loss-weight fields, `w_<name>`: every weight the engine has."""


def overall_fraction(job: JobRecord) -> float:
    """A job's progress as one fraction over its phases (see PHASES)."""
    if job.state == JobState.SUCCEEDED:
        return 1.0
    if job.progress is None:
        return 0.0
    start, end = PHASES.get(job.progress.phase, (0.0, 0.0))
    return start + (end - start) * job.progress.fraction


def confident_share(job: JobRecord) -> float | None:
    """The job's confident share: the final figure when done, the running one while training."""
    if job.metrics is not None and job.metrics.confident_share is not None:
        return job.metrics.confident_share
    return job.progress.confident_share if job.progress is not None else None


def inversion_from_form(form: dict[str, str]) -> InversionCreate:
    """The start form's fields as a request: blanks take the defaults, `classes` is a list
    like "0, 3, 7", loss weights come as `w_<name>`."""
    fields: dict[str, Any] = {}
    for name in ("classifier_id", "method", "recipe", "samples_per_class", "steps", "batch_size",
                 "seed", "dataset_id"):  # fmt: skip
        value = form.get(name, "").strip()
        if value:
            fields[name] = value
    classes = form.get("classes", "").strip()
    if classes:
        parts = [p for p in re.split(r"[\s,]+", classes) if p]
        if not all(p.isdigit() for p in parts):
            raise InvalidField("class indices separated by commas, e.g. 0, 3, 7", field="classes")
        fields["classes"] = [int(p) for p in parts]
    weights = {w: form[f"w_{w}"].strip() for w in WEIGHT_NAMES if form.get(f"w_{w}", "").strip()}
    if weights:
        fields["loss_weights"] = weights
    fields["sample_dropout"] = form.get("sample_dropout") in ("on", "true", "1")
    detectors = [d for d in DETECTORS if form.get(f"detect_{d}") in ("on", "true", "1")]
    if detectors:
        fields["detectors"] = detectors
    if form.get("data_free") in ("on", "true", "1"):
        fields["prior_source"] = "classifier"
    return parse_form(InversionCreate, fields)


def compare_rows(figures: list[dict[str, Any]]) -> list[Any]:
    """Rows of (label, meaning, [(value, delta vs the first job), ...]) over every figure any
    job has."""
    keys_in_order: list[str] = []
    for f in figures:
        keys_in_order += [k for k in f if k not in keys_in_order]
    rows = []
    base = figures[0] if figures else {}
    for key in keys_in_order:
        cells = []
        for i, f in enumerate(figures):
            value = f.get(key)
            delta = ""
            b = base.get(key)
            if (
                i > 0
                and isinstance(value, int | float)
                and isinstance(b, int | float)
                and not isinstance(value, bool)
            ):
                delta = report.fmt_delta(key, float(value) - float(b), float(b))
            cells.append((report.fmt(key, value), delta))
        rows.append((label_of(key), meaning(key), cells))
    return rows


def compare_settings(job: JobRecord) -> dict[str, Any]:
    """A job's settings as they ran, as one row of the compare view."""
    return {"classifier": job.classifier_id, **job_settings(job)}
