"""The audit report of a finished job, and the figures the dashboard shares with it.

Reads what the worker wrote (metrics.json, report.json, samples.json, the event stream) and turns
it into tables and plots. A succeeded job's files never change, so parsed files and derived
figures are cached per process (bounded); nothing here computes a metric of its own: it shows the
engine's figures, formatted.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from markupsafe import Markup
from pydantic import BaseModel, Field

from models.contracts.artifacts import (
    ArtifactName,
    AuditFigures,
    DetectorResult,
    EvasionTable,
    InversionMetrics,
)
from models.contracts.inversion import InversionConfig
from models.contracts.verdict import Verdict
from service import plots, samples, side_by_side
from service.effective import active_weights, job_settings
from service.errors import Conflict
from service.findings import Light, findings, light_of
from service.glossary import Term, label_of, meaning, term
from service.images import to_png
from service.read_cache import cache
from service.records import (
    ClassifierRecord,
    DatasetRecord,
    JobParams,
    JobRecord,
    ProgressEvent,
    events_stream,
)
from service.schemas import InversionPublic
from service.side_by_side import SideBySidePublic
from service.storage import ArtifactNotFound, ArtifactStore, JobStore, Stores

REPORT_GRID_PER_CLASS = 8
"""Samples per class inlined in the HTML report (the rest are in the downloads)."""
REPORT_GRID_CLASSES = 100
"""Classes whose samples the HTML report inlines: the page stays a few megabytes whatever the
job (the rest are in the downloads)."""


def job_metrics(artifacts: ArtifactStore, job: JobRecord) -> InversionMetrics:
    """metrics.json: the figures overall and per class, and the cost."""
    samples.require_succeeded(job)

    def load() -> InversionMetrics:
        data = samples.artifact(artifacts, job, ArtifactName.METRICS_JSON)
        return InversionMetrics.model_validate_json(data)

    return cache.get(job, "metrics", load)


def job_report_figures(artifacts: ArtifactStore, job: JobRecord) -> AuditFigures | None:
    """report.json (max-softmax scores, OOD-detector evasion), or None when the worker wrote
    none (a job that finished before the report existed)."""
    samples.require_succeeded(job)

    def load() -> AuditFigures | None:
        try:
            data = samples.artifact(artifacts, job, ArtifactName.REPORT_JSON)
        except ArtifactNotFound:
            return None
        return AuditFigures.model_validate_json(data)

    return cache.get(job, "report", load)


# --- metric tables ----------------------------------------------------------------------------
# metrics.json is models.contracts.artifacts.InversionMetrics: `overall` and `per_class` (by
# class name) hold ClassMetrics figures, `cost` the training and sampling cost. Figures are
# shown under their glossary labels (service.glossary), None as "—".

GROUPS = {
    "Confidence": ("count", "mean_confidence", "confident_share", "argmax_accuracy",
                   "mean_reference_confidence"),
    "Distinct from the data": ("msp_auroc", "knn_feature_auroc", "knn_pixel_auroc",
                               "nn_distance", "reference_nn_distance", "train_nn_distance",
                               "reference_train_nn_distance", "reference_size"),
    "Diversity": ("pixel_diversity", "reference_pixel_diversity", "feature_cosine",
                  "reference_feature_cosine", "collapsed"),
    "Cost": ("cost.train_seconds", "cost.steps", "cost.sample_seconds",
             "cost.samples_per_second", "cost.device"),
}  # fmt: skip
"""How the overall figures are laid out (method.md, "What a result must show")."""
SHARE_KEYS = ("confident_share", "argmax_accuracy")
"""Figures shown as percentages (and compared in percentage points)."""
IDENTIFIER_KEYS = ("seed",)
"""Integers that name something rather than count it: printed without thousands separators."""
CONFIDENT_SHARE = "confident_share"
"""The overall figure the jobs list shows: share of counterfeits at p_y ≥ 0.99."""


def is_share(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in SHARE_KEYS


def flatten(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as dotted keys, scalars only (lists are left to the JSON)."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, name + ".")
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
    return out


def fmt(key: str, value: Any) -> str:
    """A figure as text: shares as percentages, floats to four significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value) if key in IDENTIFIER_KEYS else f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if is_share(key):
            return f"{value:.1%}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def fmt_delta(key: str, delta: float, base: float) -> str:
    """`delta` against `base` to the precision `base` is shown with (four significant
    digits), so a difference too small to see in the figures reads "±0", never `-1.685e-05`."""
    if not math.isfinite(delta) or not math.isfinite(base):
        return ""
    if is_share(key):
        points = round(delta * 100, 1)
        return "±0 pp" if points == 0 else f"{points:+.1f} pp"
    magnitude = max(abs(base), abs(base + delta))
    decimals = 0 if magnitude >= 1000 else max(0, 3 - math.floor(math.log10(magnitude or 1.0)))
    rounded = round(delta, decimals)
    return "±0" if rounded == 0 else f"{rounded:+,.{decimals}f}"


@dataclass(frozen=True)
class Table:
    columns: list[str]  # metric keys
    rows: list[tuple[str, list[Any]]]  # (row label, raw values per column)

    @property
    def terms(self) -> list[Term]:
        return [term(c) for c in self.columns]

    def formatted(self) -> list[tuple[str, list[str]]]:
        return [
            (label, [fmt(c, v) for c, v in zip(self.columns, values, strict=True)])
            for label, values in self.rows
        ]


def overall_figures(metrics: InversionMetrics, *, keep_empty: bool = False) -> dict[str, Any]:
    """The overall figures, the cost and the reference size, flat; figures that could not be
    computed (None, e.g. distinctness without a reference set) are left out unless asked."""
    figures = metrics.overall.model_dump()
    if metrics.cost is not None:
        figures |= flatten(metrics.cost.model_dump(), "cost.")
    if metrics.reference_size:
        figures["reference_size"] = metrics.reference_size
    return {k: v for k, v in figures.items() if keep_empty or v is not None}


Figure = tuple[str, str, str]
"""(label, formatted value, what it means)."""


def grouped_figures(figures: dict[str, Any]) -> list[tuple[str, list[Figure]]]:
    """Figures in the groups of GROUPS (known order), then any other figure under "Other"."""

    def row(key: str) -> Figure:
        return (label_of(key), fmt(key, figures[key]), meaning(key))

    out = []
    for group, members in GROUPS.items():
        rows = [row(k) for k in members if k in figures]
        if rows:
            out.append((group, rows))
    known = {k for members in GROUPS.values() for k in members}
    other = [row(k) for k in figures if k not in known]
    if other:
        out.append(("Other", other))
    return out


def per_class_table(metrics: InversionMetrics, class_names: list[str]) -> Table:
    """One row per class (in class order), one column per figure that some class has."""
    index_of = {name: i for i, name in enumerate(class_names)}
    entries = sorted(
        ((index_of.get(name), name, figures.model_dump())
         for name, figures in metrics.per_class.items()),
        key=lambda e: (e[0] is None, e[0] or 0, e[1]),
    )  # fmt: skip
    columns: list[str] = []
    for _, _, flat in entries:
        columns += [c for c, v in flat.items() if c not in columns and v is not None]
    rows = [
        (name if index is None else f"{index} · {name}", [flat.get(c) for c in columns])
        for index, name, flat in entries
    ]
    return Table(columns=columns, rows=rows)


# --- max-softmax histogram -------------------------------------------------------------------


def msp_scores(artifacts: ArtifactStore, job: JobRecord) -> tuple[list[float], list[float] | None]:
    """The classifier's max softmax on the counterfeits and on the reference set. Without
    report.json, the counterfeits' scores come from samples.json (top-1 probability)."""
    figures = job_report_figures(artifacts, job)
    if figures is not None:
        return figures.msp.counterfeits, figures.msp.reference
    return samples.table(artifacts, job).max_probability.astype(float).tolist(), None


def job_histogram(artifacts: ArtifactStore, job: JobRecord) -> plots.Histogram:
    def build() -> plots.Histogram:
        counterfeits, reference = msp_scores(artifacts, job)
        series: list[tuple[str, list[float]]] = [("counterfeits", counterfeits)]
        if reference is not None:
            series.append(("real reference", reference))
        return plots.confidence_histogram(series)

    return cache.get(job, "histogram", build)


# --- training curves from the event stream ---------------------------------------------------


@dataclass(frozen=True)
class Curves:
    """Named losses and the running confident share over training steps. A resumed job
    repeats steps after its checkpoint: the latest attempt's value of a step wins."""

    losses: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    confident_share: list[tuple[float, float]] = field(default_factory=list)

    def panels(self, active: Collection[str] | None = None) -> list[Markup]:
        """A panel per loss term in `active` (the terms with weight ≠ 0; all when None) plus
        the total, a term whose curve repeats another's (kl = ce under one-hot targets)
        sharing its panel, then the confident share."""
        names = sorted(
            (n for n in self.losses if active is None or n == "total" or n in active),
            key=lambda n: (n != "total", n),
        )
        titles: dict[str, list[str]] = {}
        for name in names:
            same = next((t for t in titles if self.losses[t] == self.losses[name]), None)
            titles.setdefault(same or name, []).append(name)
        out = [
            plots.line_panel_svg(
                "loss: " + " = ".join(shown), self.losses[first], colour=plots.PALETTE[i]
            )
            for i, (first, shown) in enumerate(titles.items())
        ]
        if self.confident_share:
            out.append(
                plots.line_panel_svg(
                    "confident share (p ≥ 0.99)",
                    self.confident_share,
                    y_range=(0.0, 1.0),
                    colour=plots.PALETTE[2],
                )
            )
        return out


def job_curves(store: JobStore, job: JobRecord) -> list[Markup]:
    """The job's training curves: its active loss terms and the confident share."""
    active = active_weights(job.params.config(job.method))
    return training_curves(store, job).panels(active)


def training_events(store: JobStore, job_id: str) -> list[ProgressEvent]:
    """Every training progress event of a job, in order."""
    events: list[ProgressEvent] = []
    after = 0
    while True:
        page = store.read_events(events_stream(job_id), after)
        if not page:
            return events
        events += [e for _, e in page if isinstance(e, ProgressEvent) and e.phase == "training"]
        after = page[-1][0]


def training_curves(store: JobStore, job: JobRecord) -> Curves:
    def build() -> Curves:
        by_step = {event.step: event for event in training_events(store, job.id)}
        losses: dict[str, list[tuple[float, float]]] = {}
        share: list[tuple[float, float]] = []
        for step in sorted(by_step):
            event = by_step[step]
            for name, value in event.losses.items():
                losses.setdefault(name, []).append((step, value))
            if event.confident_share is not None:
                share.append((step, event.confident_share))
        return Curves(losses=losses, confident_share=share)

    return cache.get(job, "curves", build)


# --- the report ------------------------------------------------------------------------------


class HistogramPublic(BaseModel):
    scale: Literal["nines"] = Field(
        "nines", description="Bins are equal in −log10(1 − p); `edges` are probabilities."
    )
    edges: list[float]
    counterfeits: list[int]
    reference: list[int] | None


class ClassifierSummary(BaseModel):
    id: str
    name: str
    format: str
    architecture: str | None
    input_shape: tuple[int, int, int]
    class_names: list[str]
    num_classes: int
    sha256: str
    param_count: int | None = None
    description: str = ""


class DatasetSummary(BaseModel):
    id: str
    name: str
    count: int | None = None


class ReportSettings(JobParams):
    """The job's method and every parameter it ran with."""

    method: str
    kind: Literal["inversion", "sampling"]


class ReportPublic(BaseModel):
    job: InversionPublic
    classifier: ClassifierSummary | None = Field(description="None once the model is deleted.")
    dataset: DatasetSummary | None
    settings: ReportSettings
    effective: InversionConfig = Field(
        description="Every engine setting the job ran with, the method's defaults filled in "
        "where the request (`settings`) left them open."
    )
    metrics: InversionMetrics = Field(description="metrics.json: overall and per class.")
    confidence_histogram: HistogramPublic
    ood: EvasionTable | None = Field(
        description="OOD-detector evasion; None when the job had no reference dataset."
    )
    verdict: Verdict | None = Field(
        description="Which targets the run met, which it missed and what to try; None for a "
        "job finished before verdicts existed."
    )
    side_by_side: SideBySidePublic | None = Field(
        None,
        description="A detector-aware job beside plain c3 on the same classifier and reference "
        "set (`?baseline=` picks the plain job); None for a job that is not detector-aware.",
    )
    links: dict[str, str]


def _classifier(store: JobStore, job: JobRecord) -> ClassifierSummary | None:
    record = store.get(ClassifierRecord, job.classifier_id)
    if record is None or record.tenant != job.tenant:
        return None
    return ClassifierSummary(
        **record.model_dump(include=set(ClassifierSummary.model_fields)),
        num_classes=record.num_classes,
    )


def _dataset(store: JobStore, job: JobRecord) -> DatasetSummary | None:
    if not job.dataset_id:
        return None
    record = store.get(DatasetRecord, job.dataset_id)
    if record is None or record.tenant != job.tenant:
        return DatasetSummary(id=job.dataset_id, name="(deleted)")
    return DatasetSummary(id=record.id, name=record.name, count=record.count)


def require_report(job: JobRecord) -> None:
    if job.state != "succeeded":
        running = job.state in ("queued", "running")
        raise Conflict(
            f"job {job.id} is {job.state}: its report exists once it has succeeded",
            headers={"Retry-After": "5"} if running else None,
        )


def job_side_by_side(
    stores: Stores, job: JobRecord, baseline: str | None = None
) -> SideBySidePublic | None:
    """A detector-aware job beside plain c3 (`baseline`: the plain job's id, else the newest
    on the same classifier and reference set); None for a job that is not detector-aware. A
    `baseline` that cannot stand beside the job is a 422 naming the field."""
    plain_job, chosen = side_by_side.pick_baseline(stores.jobs, job, baseline)
    if not job.params.detectors:
        return None

    def side(of: JobRecord) -> side_by_side.Side:
        figures = job_report_figures(stores.artifacts, of)
        return side_by_side.Side(
            job_metrics(stores.artifacts, of).overall, side_by_side.held_out_evasion(of, figures)
        )

    plain = None if plain_job is None else side(plain_job)
    return side_by_side.compare(job, side(job), plain_job, chosen, plain)


def build_report(stores: Stores, job: JobRecord, baseline: str | None = None) -> ReportPublic:
    require_report(job)
    metrics = job_metrics(stores.artifacts, job)
    figures = job_report_figures(stores.artifacts, job)
    hist = job_histogram(stores.artifacts, job)
    id = job.id
    return ReportPublic(
        job=InversionPublic.of(job),
        classifier=_classifier(stores.jobs, job),
        dataset=_dataset(stores.jobs, job),
        settings=ReportSettings.model_validate(
            {"method": job.method, "kind": job.kind, **job.params.model_dump()}
        ),
        effective=job.params.config(job.method),
        metrics=metrics,
        confidence_histogram=HistogramPublic(
            edges=hist.edges,
            counterfeits=hist.counts[0],
            reference=hist.counts[1] if len(hist.counts) > 1 else None,
        ),
        ood=figures.ood if figures is not None else None,
        verdict=job.verdict or (figures.verdict if figures is not None else None),
        side_by_side=job_side_by_side(stores, job, baseline),
        links={
            "self": f"/inversions/{id}/report",
            "html": f"/inversions/{id}/report?format=html",
            "job": f"/inversions/{id}",
            "dashboard": f"/dashboard/jobs/{id}",
        },
    )


# --- the self-contained HTML report ---------------------------------------------------------


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class Thumb:
    index: int
    src: str
    confidence: float
    predicted: int


def inlined_grid(artifacts: ArtifactStore, job: JobRecord) -> dict[int, list[Thumb]]:
    def thumbs(cls: int) -> list[Thumb]:
        table = samples.table(artifacts, job)
        indices = samples.class_indices(artifacts, job, cls)[:REPORT_GRID_PER_CLASS]
        return [
            Thumb(
                index=int(index),
                src=data_uri(to_png(image)),
                confidence=float(table.confidence[index]),
                predicted=int(table.predicted[index]),
            )
            for index, image in zip(indices, samples.pixels(artifacts, job, indices), strict=True)
        ]

    def build() -> dict[int, list[Thumb]]:
        return {cls: thumbs(cls) for cls in job.params.classes[:REPORT_GRID_CLASSES]}

    return cache.get(job, "inlined-grid", build)


def _or_dash(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None and math.isfinite(value) else "—"


def evasion_rows(ood: EvasionTable | None) -> list[dict[str, Any]]:
    if ood is None:
        return []
    return [
        {
            "name": d.name,
            "label": label_of(f"detector.{d.name}"),
            "meaning": meaning(f"detector.{d.name}"),
            "accepted": _or_dash(d.accepted_share, ".1%"),
            "auroc": _or_dash(d.auroc, ".3f"),
            "threshold": _or_dash(d.threshold, ".4g"),
        }
        for d in ood.detectors
    ]


def evasion_bars(ood: EvasionTable | None) -> Markup | None:
    if ood is None or not ood.detectors:
        return None
    return plots.bars_svg(
        [
            (label_of(f"detector.{d.name}"), d.accepted_share)
            for d in ood.detectors
            if math.isfinite(d.accepted_share)
        ],
        title=f"Counterfeits accepted as in-distribution (TPR {ood.tpr:.0%} on real data)",
        width=480,
    )


def _share_change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    return fmt_delta("confident_share", after - before, before)  # percentage points


def side_by_side_rows(view: SideBySidePublic | None) -> dict[str, Any] | None:
    """The side-by-side table as the templates show it: per detector the share each side let
    through (with its traffic light) and the AUROC, then the overall figures, formatted."""
    if view is None:
        return None

    def light(result: DetectorResult | None) -> Light | None:
        return None if result is None else light_of(result)

    detectors = []
    for pair in view.detectors:
        plain, aware = pair.plain, pair.detector_aware
        detectors.append({
            "name": pair.name,
            "label": label_of(f"detector.{pair.name}"),
            "meaning": meaning(f"detector.{pair.name}"),
            "aimed": pair.aimed,
            "plain": _or_dash(plain.accepted_share if plain else None, ".1%"),
            "plain_light": light(plain),
            "aware": _or_dash(aware.accepted_share if aware else None, ".1%"),
            "aware_light": light(aware),
            "change": _share_change(
                plain.accepted_share if plain else None, aware.accepted_share if aware else None
            ),
            "plain_auroc": _or_dash(plain.auroc if plain else None, ".3f"),
            "aware_auroc": _or_dash(aware.auroc if aware else None, ".3f"),
        })  # fmt: skip
    figures = [
        {
            "name": f.name,
            "label": label_of(f.name),
            "meaning": meaning(f.name),
            "plain": fmt(f.name, f.plain),
            "aware": fmt(f.name, f.detector_aware),
            "change": ""
            if f.plain is None or f.detector_aware is None
            else fmt_delta(f.name, f.detector_aware - f.plain, f.plain),
        }
        for f in view.figures
    ]
    return {"view": view, "detectors": detectors, "figures": figures}


def report_context(stores: Stores, job: JobRecord, baseline: str | None = None) -> dict[str, Any]:
    """What templates/report.html needs, every image already a data URI."""
    report = build_report(stores, job, baseline)
    metrics = report.metrics
    overall = overall_figures(metrics)
    return {
        "report": report,
        "job": job,
        "overall": grouped_figures(overall),
        "per_class": per_class_table(metrics, job.class_names),
        "histogram": plots.histogram_svg(job_histogram(stores.artifacts, job)),
        "curves": job_curves(stores.jobs, job),
        "grid": inlined_grid(stores.artifacts, job),
        "evasion": evasion_rows(report.ood),
        "evasion_bars": evasion_bars(report.ood),
        "side_by_side": side_by_side_rows(report.side_by_side),
        "class_names": job.class_names,
        "settings": job_settings(job),
        "findings": findings(
            metrics.overall,
            report.ood,
            metrics.confident_threshold,
            method=job.method,
            detectors=job.params.detectors or (),
            data_free=job.params.prior_source == "classifier",
        ),
    }
