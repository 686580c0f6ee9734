"""Plain c3 beside detector-aware c3 (issue 15): what the counterfeits of a job made to pass
some detectors do to them, against those of plain c3 on the same classifier and reference set.

Nothing here computes a figure: both sides are the engine's stored ones, each job's
`held_out_evasion` (report.json: the evasion table on the reference set's evaluation half, the
same half for every job on one set, so the two tables share their detectors and thresholds) and
metrics.json's overall confident share and MSP-AUROC. The plain side is the newest succeeded
plain c3 job of the tenant on the same classifier and reference set, or the one a reader names
(`?baseline=<job id>`); without one, the reader is offered the request that starts it: the same
settings without `detectors` and without the prior's loss weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from models.contracts.artifacts import AuditFigures, ClassMetrics, DetectorResult, EvasionTable
from models.contracts.inversion import DETECTOR_WEIGHTS
from service.errors import InvalidField
from service.findings import side_by_side_sentence
from service.records import JobRecord, JobState
from service.schemas import InversionCreate
from service.storage import JobStore

__all__ = [
    "BASELINE_SCAN",
    "DetectorPair",
    "FigurePair",
    "Side",
    "SideBySidePublic",
    "baseline_request",
    "compare",
    "held_out_evasion",
    "is_plain_c3",
    "pick_baseline",
]

BASELINE_SCAN = 200
"""Succeeded c3 jobs of the classifier, newest first, looked through for the newest plain one
on the same reference set: a page read stays bounded however many jobs a tenant keeps."""
_PAGE = 50

PRIOR_TERMS = frozenset(term for terms in DETECTOR_WEIGHTS.values() for term in terms)
"""The loss terms `detectors` turns on: a plain run leaves them out."""

FIGURES = ("confident_share", "msp_auroc")
"""metrics.json's overall figures shown beside the detectors."""


class DetectorPair(BaseModel):
    name: str = Field(description="`max-softmax`, `energy`, `mahalanobis` or `knn`")
    aimed: bool = Field(description="The detector-aware job was made to pass this detector.")
    plain: DetectorResult | None = Field(
        description="The plain c3 job's result on the evaluation half; None without one."
    )
    detector_aware: DetectorResult | None


class FigurePair(BaseModel):
    name: str = Field(description="metrics.json's overall figure: `confident_share` or `msp_auroc`")
    plain: float | None
    detector_aware: float | None


class SideBySidePublic(BaseModel):
    """A detector-aware job beside plain c3 on the same classifier and reference set."""

    baseline_id: str | None = Field(
        description="The plain c3 job compared with; None when there is none."
    )
    chosen: Literal["newest", "requested"] | None = Field(
        description="`newest`: the newest succeeded plain c3 job on the same classifier and "
        "reference set; `requested`: the one `?baseline=` named."
    )
    detectors: list[DetectorPair] = Field(
        description="Each detector on the reference set's evaluation half, in both jobs."
    )
    figures: list[FigurePair]
    sentence: str = Field(
        description="What it means for the detectors the job aimed at, in one sentence; or why "
        "there is nothing to compare yet."
    )
    start_baseline: InversionCreate | None = Field(
        description="When there is no comparable plain c3 job: the body of a POST /inversions "
        "that starts one (this job's settings without `detectors`)."
    )
    links: dict[str, str]


@dataclass(frozen=True)
class Side:
    """What one job contributes: its overall figures and its held-out evasion table."""

    overall: ClassMetrics
    held_out: EvasionTable | None


def held_out_evasion(job: JobRecord, figures: AuditFigures | None) -> EvasionTable | None:
    """The job's evasion table on its reference set's evaluation half. A detector-aware job
    finished before report.json had the field kept its one table, `ood`, on that half."""
    if figures is None:
        return None
    if figures.held_out_evasion is not None:
        return figures.held_out_evasion
    return figures.ood if job.params.detectors else None


def is_plain_c3(job: JobRecord) -> bool:
    return job.method == "c3" and not job.params.detectors


def _newest_baseline(store: JobStore, job: JobRecord) -> JobRecord | None:
    for offset in range(0, BASELINE_SCAN, _PAGE):
        page = store.list(
            JobRecord,
            tenant=job.tenant,
            state=JobState.SUCCEEDED,
            where={"classifier_id": job.classifier_id, "method": "c3"},
            offset=offset,
            limit=_PAGE,
        )
        found = next(
            (j for j in page.items if is_plain_c3(j) and j.dataset_id == job.dataset_id), None
        )
        if found is not None or offset + _PAGE >= page.count:
            return found
    return None


def _requested_baseline(store: JobStore, job: JobRecord, id: str) -> JobRecord:
    """The job `?baseline=` names, if it can stand beside `job`; else a 422 saying why."""
    found = store.get(JobRecord, id)
    if found is None or found.tenant != job.tenant:
        raise InvalidField(f"no job with id {id!r}", field="baseline")
    if found.state != JobState.SUCCEEDED:
        raise InvalidField(
            f"job {id} is {found.state}: only a succeeded job has figures to compare",
            field="baseline",
        )
    if not is_plain_c3(found):
        kind = "detector-aware c3" if found.params.detectors else found.method
        raise InvalidField(
            f"job {id} is {kind}, not plain c3 (c3 without detectors)", field="baseline"
        )
    if found.classifier_id != job.classifier_id:
        raise InvalidField(
            f"job {id} audits another classifier ({found.classifier_id}, not {job.classifier_id})",
            field="baseline",
        )
    if found.dataset_id != job.dataset_id:
        used = f"reference set {found.dataset_id}" if found.dataset_id else "no reference set"
        raise InvalidField(
            f"job {id} used {used}, not {job.dataset_id or 'none'}: only jobs on one reference "
            "set are scored on the same held-out half",
            field="baseline",
        )
    return found


def pick_baseline(
    store: JobStore, job: JobRecord, requested: str | None = None
) -> tuple[JobRecord | None, Literal["newest", "requested"] | None]:
    """The plain c3 job to set beside detector-aware `job`: the `requested` one (checked), else
    the newest on the same classifier and reference set; (None, None) when there is none."""
    if not job.params.detectors:
        if requested is not None:
            raise InvalidField(
                f"job {job.id} is not detector-aware: a baseline is set beside a c3 job with "
                "detectors",
                field="baseline",
            )
        return None, None
    if requested is not None:
        return _requested_baseline(store, job, requested), "requested"
    found = _newest_baseline(store, job)
    return found, None if found is None else "newest"


def baseline_request(job: JobRecord) -> InversionCreate:
    """The request that starts plain c3 with `job`'s settings (classes, seed, steps, recipe,
    the weights the user set): without `detectors`, and without the prior's weights."""
    params = job.params.model_dump(exclude={"detectors", "prior_source"})
    weights = {k: v for k, v in (params.pop("loss_weights") or {}).items() if k not in PRIOR_TERMS}
    return InversionCreate.model_validate(
        params
        | {
            "classifier_id": job.classifier_id,
            "dataset_id": job.dataset_id,
            "method": "c3",
            "loss_weights": weights or None,
        }
    )


def compare(
    job: JobRecord,
    aware: Side,
    baseline: JobRecord | None,
    chosen: Literal["newest", "requested"] | None,
    plain: Side | None,
) -> SideBySidePublic:
    """`job` (detector-aware, its figures `aware`) beside `baseline` (its figures `plain`)."""
    aimed = list(job.params.detectors or ())
    plain_table = plain.held_out if plain is not None else None
    plain_by = {d.name: d for d in plain_table.detectors} if plain_table is not None else {}
    aware_table = aware.held_out
    names = [d.name for d in aware_table.detectors] if aware_table is not None else []
    names += [n for n in plain_by if n not in names]
    aware_by = {d.name: d for d in aware_table.detectors} if aware_table is not None else {}
    detectors = [
        DetectorPair(
            name=n, aimed=n in aimed, plain=plain_by.get(n), detector_aware=aware_by.get(n)
        )
        for n in names
    ]
    figures = [
        FigurePair(
            name=name,
            plain=None if plain is None else getattr(plain.overall, name),
            detector_aware=getattr(aware.overall, name),
        )
        for name in FIGURES
    ]
    links = {}
    start = None
    if aware_table is None:
        sentence = (
            "This job had no reference set, so no detector was fitted: plain and "
            "detector-aware c3 compare on the held-out half of a reference set."
        )
    elif baseline is None:
        sentence = (
            "No plain c3 job on this classifier and reference set has finished yet: start one "
            "with the same settings, without detectors, to see what aiming at the detectors "
            "changed."
        )
        start = baseline_request(job)
    elif plain_table is None:
        sentence = (
            f"Plain c3 job {baseline.id} finished before plain jobs were also scored on the "
            "held-out half of the reference set: start a new one to compare the detectors."
        )
        start = baseline_request(job)
    else:
        data_free = job.params.prior_source == "classifier"
        sentence = side_by_side_sentence(plain_table, aware_table, aimed, data_free) or (
            "Neither job's evasion table has the detectors this job aimed at."
        )
    if baseline is not None:
        links = {
            "baseline": f"/inversions/{baseline.id}",
            "baseline_report": f"/inversions/{baseline.id}/report",
            "compare": f"/dashboard/compare?jobs={baseline.id}&jobs={job.id}",
        }
    return SideBySidePublic(
        baseline_id=None if baseline is None else baseline.id,
        chosen=chosen,
        detectors=detectors,
        figures=figures,
        sentence=sentence,
        start_baseline=start,
        links=links,
    )
