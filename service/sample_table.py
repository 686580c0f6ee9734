"""A job's sample index as columns (index.npz), so that reading a page costs a page.

samples.json holds one record per sample: a 100,000-sample job's is tens of megabytes of JSON,
seconds to parse and a scan per filtered page. The table keeps the same facts as arrays, with
the samples of each class listed contiguously (`by_class`, `class_start`): a class, a
confidence range or a page after a cursor is a slice and a vectorised mask, never a scan of
Python objects. It is built once per job (by the worker when the job finishes, or the first
time an older job is read) and stored beside the samples.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.contracts.artifacts import SampleRecord

COLUMNS = ("targets", "predicted", "confidence", "top_classes", "top_probabilities",
           "by_class", "class_start")  # fmt: skip


@dataclass(frozen=True)
class SampleTable:
    """Row i is sample i. `top_classes`/`top_probabilities` are (n, k), most probable first;
    the samples of class c are `by_class[class_start[c]:class_start[c + 1]]`, in index order."""

    targets: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    top_classes: np.ndarray
    top_probabilities: np.ndarray
    by_class: np.ndarray
    class_start: np.ndarray

    @classmethod
    def of(cls, records: Sequence[SampleRecord], num_classes: int) -> SampleTable:
        for position, record in enumerate(records):
            if record.index != position:
                raise ValueError(f"sample {position} is recorded as index {record.index}")
        k = max((len(r.top_k) for r in records), default=0)
        top_classes = np.full((len(records), k), -1, dtype=np.int32)
        top_probabilities = np.zeros((len(records), k), dtype=np.float32)
        for i, record in enumerate(records):
            for j, (c, p) in enumerate(record.top_k):
                top_classes[i, j], top_probabilities[i, j] = c, p
        targets = np.array([r.target for r in records], dtype=np.int32)
        return cls(
            targets=targets,
            predicted=np.array([r.predicted for r in records], dtype=np.int32),
            confidence=np.array([r.confidence for r in records], dtype=np.float32),
            top_classes=top_classes,
            top_probabilities=top_probabilities,
            by_class=np.argsort(targets, kind="stable").astype(np.int32),
            class_start=np.searchsorted(
                np.sort(targets), np.arange(num_classes + 1), side="left"
            ).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in COLUMNS)

    @property
    def max_probability(self) -> np.ndarray:
        """Each sample's highest probability (its max-softmax score)."""
        if self.top_probabilities.shape[1] == 0:
            return self.confidence
        return self.top_probabilities[:, 0]

    def of_class(self, cls: int) -> np.ndarray:
        """The indices of class `cls`'s samples, in index order (empty for an unknown class)."""
        if not 0 <= cls < len(self.class_start) - 1:
            return np.empty(0, dtype=np.int32)
        return self.by_class[self.class_start[cls] : self.class_start[cls + 1]]

    def select(
        self, cls: int | None = None, min_confidence: float = 0.0, max_confidence: float = 1.0
    ) -> np.ndarray:
        """The indices of the samples of `cls` (any class if None) whose confidence lies in
        [min_confidence, max_confidence], in index order."""
        candidates = np.arange(len(self), dtype=np.int32) if cls is None else self.of_class(cls)
        confidence = self.confidence[candidates].astype(np.float64)  # as samples.json has it
        return candidates[(confidence >= min_confidence) & (confidence <= max_confidence)]

    def record(self, index: int) -> SampleRecord:
        k = int(np.count_nonzero(self.top_classes[index] >= 0))
        return SampleRecord(
            index=index,
            target=int(self.targets[index]),
            predicted=int(self.predicted[index]),
            confidence=float(self.confidence[index]),
            top_k=[
                (int(c), float(p))
                for c, p in zip(
                    self.top_classes[index, :k], self.top_probabilities[index, :k], strict=True
                )
            ],
        )

    def to_npz(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, **{name: getattr(self, name) for name in COLUMNS})
        return out.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> SampleTable:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return cls(**{name: np.asarray(npz[name]) for name in COLUMNS})
