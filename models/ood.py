"""Would an out-of-distribution detector catch the counterfeits? The evasion table of the audit.

Four post-hoc detectors score an input by how in-distribution it looks (higher = more so):
- max-softmax: max_k softmax(z)_k (Hendrycks & Gimpel, ICLR 2017);
- energy: logsumexp_k z_k, the negative free energy at T = 1 (Liu et al., NeurIPS 2020);
- mahalanobis: −min_c (f − μ_c)ᵀ Σ⁻¹ (f − μ_c), class means and one tied covariance fitted on
  real features (Lee et al., NeurIPS 2018), without input preprocessing;
- knn: −‖f̂ − f̂₍ₖ₎‖, the distance of the normalised feature to its k-th nearest real neighbour
  (Sun et al., ICML 2022).
The real reference set is split in two: one half fits the detectors (class means, covariance,
neighbour bank), the other half sets each detector's threshold so that it keeps `tpr` (95%) of
real inputs, FPR95-style. A detector's `accepted_share` is the share of counterfeits at or above
that threshold: counterfeits it would let through as in-distribution. Its AUROC is that of
telling held-out real inputs (positive) from counterfeits by the score.
"""

from __future__ import annotations

import math

import torch

from models.contracts.artifacts import AuditFigures, DetectorResult, EvasionTable, MspScores
from models.metrics import auroc
from models.scoring import ClassifierOutputs

__all__ = [
    "audit_figures",
    "detector_scores",
    "evasion",
    "evasion_table",
    "keep_threshold",
    "mahalanobis_score",
]


def keep_threshold(real_scores: torch.Tensor, tpr: float = 0.95) -> float:
    """The highest threshold t with share(real ≥ t) ≥ tpr: reject at most ⌊(1 − tpr)·n⌋ reals."""
    ordered = real_scores.double().flatten().sort().values
    rejected = math.floor((1.0 - tpr) * ordered.numel() + 1e-9)
    return float(ordered[rejected])


def _fit_mahalanobis(
    features: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    classes = labels.unique()
    means = torch.stack([features[labels == c].mean(0) for c in classes])  # (k, d)
    centred = features - means[torch.searchsorted(classes, labels)]
    cov = centred.T @ centred / max(len(features), 1)  # (d, d), tied over classes
    cov = cov + ridge * (cov.diagonal().mean() + 1e-12) * torch.eye(cov.shape[0], dtype=cov.dtype)
    return means, torch.linalg.inv(cov)


CHUNK = 4096  # rows scored at a time: memory stays (CHUNK × classes), whatever the run's size


def mahalanobis_score(
    features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor
) -> torch.Tensor:
    """−min_c (f − μ_c)ᵀ P (f − μ_c), as fᵀPf − 2 fᵀPμ_c + μ_cᵀPμ_c, a chunk of rows at a time."""
    mean_term = ((means @ precision) * means).sum(dim=1)  # (k,)
    scores = []
    for chunk in features.split(CHUNK):
        projected = chunk @ precision  # (m, d)
        own = (projected * chunk).sum(dim=1, keepdim=True)  # (m, 1)
        distances = own - 2 * projected @ means.T + mean_term  # (m, k)
        scores.append(-distances.min(dim=1).values)
    return torch.cat(scores) if scores else features.new_empty(0)


def _knn(features: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    b = torch.nn.functional.normalize(bank, dim=1)
    k = min(k, b.shape[0])
    scores = []
    for chunk in features.split(CHUNK):
        distances = torch.cdist(torch.nn.functional.normalize(chunk, dim=1), b)  # (m, n_bank)
        scores.append(-distances.topk(k, dim=1, largest=False).values[:, -1])
    return torch.cat(scores) if scores else features.new_empty(0)


def detector_scores(
    logits: torch.Tensor,
    features: torch.Tensor,
    fit_features: torch.Tensor,
    fit_labels: torch.Tensor,
    *,
    k: int = 10,
) -> dict[str, torch.Tensor]:
    """Each detector's in-distribution score for every input (higher = more in-distribution)."""
    logits, features = logits.double(), features.double()
    fit_features = fit_features.double()
    means, precision = _fit_mahalanobis(fit_features, fit_labels.long())
    return {
        "max-softmax": logits.softmax(dim=1).max(dim=1).values,
        "energy": torch.logsumexp(logits, dim=1),
        "mahalanobis": mahalanobis_score(features, means, precision),
        "knn": _knn(features, fit_features, k),
    }


def evasion_table(
    reference_logits: torch.Tensor,
    reference_features: torch.Tensor,
    counterfeit_logits: torch.Tensor,
    counterfeit_features: torch.Tensor,
    reference_labels: torch.Tensor | None = None,
    *,
    tpr: float = 0.95,
    k: int = 10,
    seed: int = 0,
) -> tuple[list[DetectorResult], int, int]:
    """Detector results, and the sizes of the fit and held-out halves of the reference set.

    Mahalanobis uses the reference labels when given, else the classifier's predictions.
    """
    n = reference_logits.shape[0]
    if n < 4:
        raise ValueError("the reference set needs at least 4 images to fit and hold out")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fit, held_out = order[: n // 2], order[n // 2 :]
    labels = reference_labels if reference_labels is not None else reference_logits.argmax(1)
    fit_features, fit_labels = reference_features[fit], labels[fit]
    real = detector_scores(
        reference_logits[held_out], reference_features[held_out], fit_features, fit_labels, k=k
    )
    fake = detector_scores(counterfeit_logits, counterfeit_features, fit_features, fit_labels, k=k)
    results = []
    for name, real_scores in real.items():
        threshold = keep_threshold(real_scores, tpr)
        results.append(
            DetectorResult(
                name=name,
                auroc=auroc(real_scores.numpy(), fake[name].numpy()),
                accepted_share=float((fake[name] >= threshold).double().mean()),
                threshold=threshold,
            )
        )
    return results, len(fit), len(held_out)


EVASION_SAMPLE = 10_000
"""The detectors score at most this many counterfeits, evenly spread over the run (classes
alike): the shares they accept are then within about ±1% of all of them, at a bounded cost."""


def evasion(
    counterfeits: ClassifierOutputs,
    reference: ClassifierOutputs,
    reference_y: torch.Tensor | None = None,
    *,
    tpr: float = 0.95,
) -> EvasionTable | None:
    """The evasion table of `counterfeits` (at most EVASION_SAMPLE of them) against the real
    `reference` outputs, split in two by `evasion_table`; None with fewer than 4 real inputs."""
    if len(reference.logits) < 4:
        return None
    n = len(counterfeits.logits)
    scored = torch.linspace(0, n - 1, min(n, EVASION_SAMPLE)).round().long().unique()
    results, n_fit, n_eval = evasion_table(
        reference.logits, reference.features, counterfeits.logits[scored],
        counterfeits.features[scored], reference_y, tpr=tpr,
    )  # fmt: skip
    return EvasionTable(
        tpr=tpr,
        reference_fit=n_fit,
        reference_eval=n_eval,
        counterfeits=len(scored),
        detectors=results,
    )


def audit_figures(
    counterfeits: ClassifierOutputs,
    reference: ClassifierOutputs | None = None,
    reference_y: torch.Tensor | None = None,
    *,
    tpr: float = 0.95,
) -> AuditFigures:
    """What the audit report shows beyond the metrics (report.json): the max-softmax of every
    counterfeit (and real reference input, for the histogram) and, given a reference set, the
    evasion table. Takes the classifier outputs that `compute_metrics` already computed."""
    fake_msp = [round(float(p), 5) for p in counterfeits.probabilities.max(1).values]
    if reference is None or len(reference.logits) < 4:
        return AuditFigures(msp=MspScores(counterfeits=fake_msp))
    real_msp = [round(float(p), 5) for p in reference.probabilities.max(1).values]
    return AuditFigures(
        msp=MspScores(counterfeits=fake_msp, reference=real_msp),
        ood=evasion(counterfeits, reference, reference_y, tpr=tpr),
    )
