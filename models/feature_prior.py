"""Where a feature-space detector accepts an input: the prior of detector-aware c3 (issue 15).

Plain c3 fools the classifier's confidence, but a Mahalanobis or k-NN detector on the
classifier's features still catches its counterfeits (`models.ood`). Detector-aware c3 adds
hinge terms that pull each counterfeit's feature into the region such a detector accepts,
estimated the way the detector itself would be:

- mahalanobis: (f − μ_y)ᵀ Σ⁻¹ (f − μ_y) beyond the distance that `quantile` of real inputs of
  class y stay within (class means and one tied covariance, as Lee et al. fit them);
- knn: the distance of f̂ to its k-th nearest real neighbour (normalised features, as Sun et
  al.), over that of `quantile` of real inputs;
- batch_stats: without real data, DeepInversion's BatchNorm prior: the batch's per-channel
  mean and variance at each BatchNorm input against the layer's running statistics.

The real features come from the reference set's *generator half* (`split_reference`); the
evasion table is computed on the other half only, so its figures are not the generator's
training targets. The KL-to-one-hot objective stays the primary one: each term is a hinge,
zero for a counterfeit already inside (so it does not pull the features together), and each
sample's hinge is weighted by its (detached) margin above the confidence threshold,
(p_y − τ) / (1 − τ) clamped to [0, 1]: a counterfeit is pulled towards real features only once
it is confident, and no further than its confidence allows.

How hard each class is pulled is closed-loop (`models.control`, the prior gain): the probes
ask `FeaturePrior.rejected` whether the aimed detectors, at their 95%-TPR thresholds and
scored as the evasion table scores them, would still reject the class's counterfeits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.classifier import LoadedClassifier
from models.ood import mahalanobis_score

__all__ = ["FeaturePrior", "build_prior", "split_reference"]

KNN_K = 10  # neighbours, as the k-NN detector of the evasion table
ACCEPT_QUANTILE = 0.95  # a detector accepts what lies within the distance this share of real
# inputs keep (the evasion table's 95%-TPR threshold): what the closed loop watches
RIDGE = 1e-3  # covariance ridge, as the Mahalanobis detector of the evasion table


def split_reference(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the generator half and of the evaluation half of a reference set of n.

    Seeded by the set alone, not by the run: every detector-aware job on one reference set is
    evaluated on the same half, so their evasion tables compare."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[: n // 2], order[n // 2 :]


def _kth_distance(unit: torch.Tensor, bank: torch.Tensor, k: int, skip_self: bool) -> torch.Tensor:
    """Distance of each row of `unit` (m, d) to its k-th nearest row of `bank` (b, d)."""
    k = min(k + int(skip_self), bank.shape[0])
    return torch.cdist(unit, bank).topk(k, dim=1, largest=False).values[:, -1]


@dataclass
class FeaturePrior:
    """The real feature statistics one classifier's counterfeits are pulled towards.

    `means` (K, d) and `precision` (d, d) are None without real features, and so is `bank`;
    classes absent from the reference set fall back to the mean of all.
    """

    means: torch.Tensor | None
    precision: torch.Tensor | None
    mahalanobis_radius: torch.Tensor | None  # (K,) own-class distance that `quantile` keep
    bank: torch.Tensor | None  # (b, d) normalised real features
    knn_radius: float
    batch_norms: list[nn.Module]
    mahalanobis_accept: float = float("inf")  # min-over-classes distance ACCEPT_QUANTILE keep
    knn_accept: float = float("inf")  # k-th neighbour distance ACCEPT_QUANTILE keep

    @property
    def terms(self) -> tuple[str, ...]:
        """The prior's terms this classifier and reference set make possible."""
        names = ("mahalanobis", "knn") if self.means is not None else ()
        return names + (("batch_stats",) if self.batch_norms else ())

    def mahalanobis_distance(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(f − μ_y)ᵀ Σ⁻¹ (f − μ_y) per sample (n,)."""
        if self.means is None or self.precision is None:
            raise RuntimeError("the Mahalanobis prior needs real features")
        centred = features - self.means[labels]  # (n, d)
        return ((centred @ self.precision) * centred).sum(dim=1)

    def knn_distance(self, features: torch.Tensor) -> torch.Tensor:
        """Distance of f̂ to its k-th nearest real neighbour per sample (n,)."""
        if self.bank is None:
            raise RuntimeError("the k-NN prior needs real features")
        return _kth_distance(F.normalize(features, dim=1), self.bank, KNN_K, False)

    def mahalanobis(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Hinge max(0, d_M(f, μ_y) / r_y − 1) per sample (n,): zero inside the radius."""
        if self.mahalanobis_radius is None:
            raise RuntimeError("the Mahalanobis prior needs real features")
        distance = self.mahalanobis_distance(features, labels)
        return F.relu(distance / self.mahalanobis_radius[labels] - 1.0)

    def knn(self, features: torch.Tensor) -> torch.Tensor:
        """Hinge max(0, kth(f̂) / r − 1) per sample (n,) on the k-th nearest real neighbour's
        distance."""
        return F.relu(self.knn_distance(features) / self.knn_radius - 1)

    def rejected(
        self, features: torch.Tensor, labels: torch.Tensor, detectors: Iterable[str]
    ) -> torch.Tensor | None:
        """Per sample (n,): at least one of `detectors` ("mahalanobis", "knn"; others ignored)
        would reject it at 95% TPR, scored as the evasion table scores it (Mahalanobis: the
        distance to the nearest class mean, whatever the label); None when no term of the
        prior is named.

        A data-free prior has nothing to score the probes against: every probe counts as
        rejected, so the closed loop pulls each class as hard as its confidence allows (a
        fixed weight fit neither resnet, which needed 0.1, nor gelu-bn-cnn, which lost its
        confidence there)."""
        if self.means is None:
            if "batch_stats" not in detectors or not self.batch_norms:
                return None
            return torch.ones(len(features), dtype=torch.bool, device=features.device)
        out = []
        for name in detectors:
            if name == "mahalanobis" and self.means is not None and self.precision is not None:
                nearest = -mahalanobis_score(features, self.means, self.precision)
                out.append(nearest > self.mahalanobis_accept)
            elif name == "knn" and self.bank is not None:
                out.append(self.knn_distance(features) > self.knn_accept)
        return torch.stack(out).any(dim=0) if out else None

    @contextmanager
    def batch_stats(self, active: bool = True) -> Iterator[list[torch.Tensor]]:
        """Collects, during the classifier's forward pass inside the block, each BatchNorm
        layer's ‖μ_batch − μ_run‖₂ + ‖σ²_batch − σ²_run‖₂ (DeepInversion, Yin et al., CVPR
        2020); nothing when not `active`."""
        losses: list[torch.Tensor] = []

        def capture(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            dims = [0, *range(2, x.dim())]
            mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
            running_mean, running_var = module.running_mean, module.running_var
            assert isinstance(running_mean, torch.Tensor)  # batch_norms() keeps only these
            assert isinstance(running_var, torch.Tensor)
            losses.append(
                torch.linalg.vector_norm(mean - running_mean)
                + torch.linalg.vector_norm(var - running_var)
            )

        handles = (
            [bn.register_forward_pre_hook(capture) for bn in self.batch_norms] if active else []
        )
        try:
            yield losses
        finally:
            for handle in handles:
                handle.remove()


@torch.no_grad()
def build_prior(
    classifier: LoadedClassifier,
    real_x: torch.Tensor | None = None,
    real_y: torch.Tensor | None = None,
    *,
    quantile: float = 0.8,
    batch_size: int = 256,
) -> FeaturePrior:
    """The prior of `classifier` from real [0, 1] images `real_x` (n, C, H, W) of the
    generator half, labelled `real_y` (n,) or by the classifier's own predictions."""
    norms = classifier.batch_norms()
    if real_x is None or len(real_x) < 2:
        return FeaturePrior(None, None, None, None, 1.0, norms)
    device = classifier.device
    parts = [classifier.forward_with_features(x.to(device)) for x in real_x.split(batch_size)]
    logits = torch.cat([p[0] for p in parts])
    features = torch.cat([p[1] for p in parts]).double()
    labels = (real_y.to(device) if real_y is not None else logits.argmax(dim=1)).long()

    k = classifier.num_classes
    overall = features.mean(dim=0)
    means = overall.expand(k, -1).clone()
    for c in labels.unique():
        means[c] = features[labels == c].mean(dim=0)
    centred = features - means[labels]
    cov = centred.T @ centred / len(features)
    cov = cov + RIDGE * (cov.diagonal().mean() + 1e-12) * torch.eye(cov.shape[0], dtype=cov.dtype)
    precision = torch.linalg.inv(cov)
    own = ((centred @ precision) * centred).sum(dim=1)  # (n,)

    def per_class(q: float) -> torch.Tensor:
        radius = torch.full((k,), float(own.quantile(q)), dtype=own.dtype, device=device)
        for c in labels.unique():
            mine = own[labels == c]
            if len(mine) >= 5:  # a class's own radius once it has a few examples
                radius[c] = mine.quantile(q)
        return radius.clamp_min(1e-6)

    bank = F.normalize(features, dim=1)
    real_knn = _kth_distance(bank, bank, KNN_K, skip_self=True)
    dtype = torch.float32
    return FeaturePrior(
        means=means.to(dtype),
        precision=precision.to(dtype),
        mahalanobis_radius=per_class(quantile).to(dtype),
        bank=bank.to(dtype),
        knn_radius=max(float(real_knn.quantile(quantile)), 1e-6),
        batch_norms=norms,
        mahalanobis_accept=float(
            (-mahalanobis_score(features, means, precision)).quantile(ACCEPT_QUANTILE)
        ),
        knn_accept=max(float(real_knn.quantile(ACCEPT_QUANTILE)), 1e-6),
    )
