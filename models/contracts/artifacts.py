"""What an inversion run leaves behind, and the progress it reports on the way.

A run (a service job or `c3 invert`) writes the same files with the same schema:
- `samples.json`: one `SampleRecord` per sample (target, prediction, p_target, top-k);
- `samples.npz`: `SamplesArrays`, every sample's 8-bit pixels exactly as they were scored;
- `metrics.json`: `InversionMetrics`, the audit figures per class and overall, and the cost;
- `report.json`: `AuditFigures`, max-softmax scores for the histogram and the OOD-detector
  evasion table (on the whole reference set, and on its evaluation half, where plain and
  detector-aware runs compare).
Figures that could not be computed (no reference set, too few samples) are None, never NaN.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from models.contracts.npz import NpzWriter
from models.contracts.verdict import Verdict

__all__ = [
    "CONFIDENT",
    "ArtifactName",
    "AuditFigures",
    "ClassMetrics",
    "Cost",
    "DetectorResult",
    "EvasionTable",
    "InversionMetrics",
    "MspScores",
    "Phase",
    "ProbeFigures",
    "Progress",
    "SampleIndex",
    "SampleRecord",
    "SamplesArrays",
    "SamplesWriter",
]

CONFIDENT = 0.99
"""p_y at or above this counts as a confident counterfeit."""


class ArtifactName(StrEnum):
    """The files of a finished run, by name (blob keys and `c3 invert`'s output folder)."""

    SAMPLES_JSON = "samples.json"
    SAMPLES_NPZ = "samples.npz"
    METRICS_JSON = "metrics.json"
    REPORT_JSON = "report.json"


class _Figures(BaseModel):
    """Figures: a non-finite float (an undefined mean, an AUROC of nothing) is stored as None."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _finite_or_none(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()
        }


class SampleRecord(_Figures):
    index: int
    target: int
    predicted: int
    confidence: float = Field(description="The classifier's probability of the target class.")
    top_k: list[tuple[int, float]] = Field(description="(class, probability), most probable first")


SampleIndex = TypeAdapter(list[SampleRecord])
"""samples.json: every sample's record, in index order."""


class ClassMetrics(_Figures):
    """The figures for one class (or overall). None: not computable (e.g. no reference)."""

    count: int
    mean_confidence: float | None = None  # mean p_y
    confident_share: float | None = None  # share with p_y ≥ 0.99
    argmax_accuracy: float | None = None  # share with argmax = y
    nn_distance: float | None = None  # mean pixel L2 to the nearest reference image
    reference_nn_distance: float | None = None  # same for real reference images (leave-one-out)
    train_nn_distance: float | None = None  # mean pixel L2 to the nearest training image
    reference_train_nn_distance: float | None = None  # same for the real reference images
    msp_auroc: float | None = None  # counterfeits vs real by −max softmax probability
    knn_feature_auroc: float | None = None  # ... by k-NN distance in feature space
    knn_pixel_auroc: float | None = None  # ... by k-NN distance in pixel space
    pixel_diversity: float | None = None  # mean pairwise L2 within the class
    reference_pixel_diversity: float | None = None
    feature_cosine: float | None = None  # mean pairwise feature cosine within the class
    reference_feature_cosine: float | None = None
    mean_reference_confidence: float | None = None  # mean max softmax of real images
    collapsed: bool | None = None  # the class's samples are nearly one pattern


class Cost(_Figures):
    """What a result cost to make."""

    train_seconds: float | None = None  # generator training wall time
    steps: int | None = None  # training steps
    sample_seconds: float | None = None  # the generator's wall time to produce the samples
    samples_per_second: float | None = None
    score_seconds: float | None = None  # the classifier's pass over every delivered sample
    metrics_seconds: float | None = None  # the figures beyond each sample's scores
    device: str | None = None


class InversionMetrics(_Figures):
    """metrics.json: the audit figures of method.md ("What a result must show")."""

    overall: ClassMetrics
    per_class: dict[str, ClassMetrics] = Field(description="By class name, in class order.")
    cost: Cost | None = None
    collapsed_classes: list[str] = Field(default_factory=list)
    reference_size: int = 0
    knn_k: int = 5
    confident_threshold: float = CONFIDENT


class DetectorResult(_Figures):
    name: str = Field(description="`max-softmax`, `energy`, `mahalanobis` or `knn`")
    auroc: float | None = Field(
        description="AUROC of telling real reference data (positive) from counterfeits."
    )
    accepted_share: float = Field(
        description="Share of counterfeits the detector accepts as in-distribution at the "
        "threshold that keeps `tpr` of the real reference data."
    )
    threshold: float


class EvasionTable(_Figures):
    tpr: float = Field(description="Share of real reference data kept by each threshold.")
    reference_fit: int = Field(description="Reference images the detectors were fit on.")
    reference_eval: int = Field(description="Held-out reference images setting the thresholds.")
    counterfeits: int = Field(description="Counterfeits the detectors scored (at most 10,000).")
    detectors: list[DetectorResult]


class MspScores(_Figures):
    counterfeits: list[float] = Field(description="Max softmax of every counterfeit.")
    reference: list[float] | None = Field(None, description="... of every real reference image.")


class AuditFigures(_Figures):
    """report.json: what the audit report shows beyond the metrics."""

    msp: MspScores
    ood: EvasionTable | None = Field(
        None, description="OOD-detector evasion; None when the run had no reference set."
    )
    held_out_evasion: EvasionTable | None = Field(
        None,
        description="The evasion table on the reference set's evaluation half only "
        "(`models.feature_prior.split_reference`, seeded by the set alone): the half a "
        "detector-aware generator never sees, the same for every run on one reference set, so "
        "plain and detector-aware runs compare on it. A detector-aware run's `ood` is this "
        "table. None without a reference set, or for a run finished before it existed.",
    )
    verdict: Verdict | None = Field(
        None, description="Which targets the run met; None for a run before verdicts existed."
    )


@dataclass(frozen=True)
class SamplesArrays:
    """samples.npz: `x` (n, C, H, W) uint8 pixels, `targets`, `predicted` (int64) and
    `confidence` (float32), row i being sample i."""

    x: np.ndarray
    targets: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(  # stored, not compressed: see models.contracts.npz
            buffer,
            x=self.x.astype(np.uint8),
            targets=self.targets.astype(np.int64),
            predicted=self.predicted.astype(np.int64),
            confidence=self.confidence.astype(np.float32),
        )
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes | Path) -> SamplesArrays:
        source = data if isinstance(data, Path) else io.BytesIO(data)
        with np.load(source, allow_pickle=False) as npz:
            return cls(
                x=np.asarray(npz["x"]),
                targets=np.asarray(npz["targets"]),
                predicted=np.asarray(npz["predicted"]),
                confidence=np.asarray(npz["confidence"]),
            )


class SamplesWriter:
    """samples.npz written as the samples come: the pixels stream into the archive a block at a
    time, so a run never holds all of them (the same file `SamplesArrays.to_npz` writes)."""

    def __init__(self, path: Path, count: int, shape: tuple[int, ...]) -> None:
        self.path = path
        self._npz = NpzWriter(path)
        self._x = self._npz.stream("x", np.dtype(np.uint8), (count, *shape))

    def write(self, pixels: np.ndarray) -> None:
        """The next samples' pixels, (n, C, H, W) uint8, in index order."""
        self._x.write(pixels)

    def abort(self) -> None:
        """Give up the archive (the run stopped): close it, whatever it holds."""
        self._npz.abort()

    def close(self, targets: np.ndarray, predicted: np.ndarray, confidence: np.ndarray) -> Path:
        """Finish the archive with each sample's verdict; the file's path."""
        try:
            self._x.close()
        finally:
            self._npz.array("targets", targets.astype(np.int64))
            self._npz.array("predicted", predicted.astype(np.int64))
            self._npz.array("confidence", confidence.astype(np.float32))
            self._npz.close()
        return self.path


class Phase(StrEnum):
    """Where a run is; the dashboard places each on one overall progress bar."""

    QUEUED = "queued"
    LOADING = "loading"
    TRAINING = "training"
    SAMPLING = "sampling"
    METRICS = "metrics"
    SAVING = "saving"
    DONE = "done"


class ProbeFigures(BaseModel):
    """The adaptive recipe's last check (models.control.ProbeReport), per probed class in
    `classes` order: what the controller measured on probes sampled as delivered, and the
    per-class weights it set."""

    step: int
    classes: list[int]
    confident: list[float] = Field(description="Share at p_y >= the threshold, this check.")
    argmax: list[float]
    diversity: list[float] = Field(description="Mean pairwise RMS pixel distance (spread).")
    collapsed: list[bool] = Field(description="Spread under 0.8x diversity_floor.")
    lagging: list[bool] = Field(description="Pooled misses over 1% of the class's probes.")
    diversity_weight: list[float] = Field(description="Level of the feature-diversity terms.")
    spread_target: list[float] = Field(description="Target of the class's spread hinge.")
    pull: list[float] = Field(description="Weight of the class in the training batch.")
    overall_confident: float
    overall_argmax: float
    targets_met: bool
    passes: int
    finished: bool
    prior_rejected: list[float] = Field(
        default_factory=list,
        description="Detector-aware c3: share of the class's probes that an aimed feature "
        "detector rejects at 95% TPR (empty for plain c3).",
    )
    prior_gain: list[float] = Field(
        default_factory=list, description="Detector-aware c3: the class's prior gain."
    )


class Progress(_Figures):
    """How far a run is: reported by the engine, kept in the job record, sent over SSE."""

    phase: Phase
    step: int = Field(description="Steps (training) or samples (sampling) done in this phase.")
    total_steps: int
    fraction: float = Field(description="step / total_steps")
    losses: dict[str, float] = Field(default_factory=dict, description="Last step's losses.")
    confident_share: float | None = Field(
        None, description="Share of the latest training batches classified at p ≥ 0.99."
    )
    steps_per_second: float | None = None
    eta_seconds: float | None = None
    stops_early: bool = Field(
        False,
        description="Training stops when its targets hold (the adaptive recipe): `total_steps` "
        "is a budget, so `fraction` and `eta_seconds` are upper bounds on what is left.",
    )
    updated_at: float = Field(description="Unix time of this report.")
    probe: ProbeFigures | None = Field(
        None, description="Adaptive recipe: the controller's last check (per-class figures)."
    )

    @field_validator("losses", mode="before")
    @classmethod
    def _finite_losses(cls, losses: Any) -> Any:
        if isinstance(losses, dict):
            return {
                k: v for k, v in losses.items() if isinstance(v, int | float) and math.isfinite(v)
            }
        return losses
