"""Can the last layer's weights stand in for real features? Class prototypes as a data-free prior
(issue 15), measured on zoo members.

    .venv/bin/python bench/prototypes.py                       # six members
    .venv/bin/python bench/prototypes.py --members paper-cnn,vit --per-class 30

The rows of the head's weights (`LoadedClassifier.class_directions`: ∂logit / ∂features, read
through the graph, so ONNX uploads have them too) are the one class-conditional statistic every
classifier carries. Each member (bench/zoo_members.py, cached) runs plain c3 through
`models.audit.audit`; its counterfeits and the real digits of the reference set's generator half
are compared in feature space, and the detectors are fit on the evaluation half
(`models.feature_prior`, 95%-TPR thresholds), as the report's evasion table is:

- `align`: mean cos(μ_y − μ, w_y − w̄) of the real class means μ_y about the real mean μ with
  the centred weight rows: how much the weights say about where each class sits;
- `own real` / `own fake`: mean cos(f − mean, w_y − w̄) of real inputs about their mean and of
  counterfeits about theirs: whether a counterfeit's class-specific part already points along
  its class's row (a prototype term would pull it there);
- `offset`: |mean of the counterfeits − μ| / |μ|: the part common to every class, which
  the weights cannot place (it moves every logit alike);
- `ideal maha` / `ideal knn`: the share of "ideal prototypes" μ + |μ_y − μ| û_y the detectors
  accept, with μ and |μ_y − μ| taken from real data: the best a prior built on the weights'
  directions could aim at;
- `fake maha` / `fake knn`: the same for the counterfeits themselves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import start_engine_bench  # noqa: E402
from bench.zoo_members import MEMBERS, prepare  # noqa: E402
from models.audit import audit  # noqa: E402
from models.classifier import LoadedClassifier  # noqa: E402
from models.contracts.inversion import InversionConfig  # noqa: E402
from models.feature_prior import FeaturePrior, build_prior, split_reference  # noqa: E402

DEFAULT_MEMBERS = "paper-cnn,gelu-bn-cnn,resnet,mobilenet-se,vit,mlp"
HEADER = (
    f"{'member':<14}{'align':>6}{'own real':>9}{'own fake':>9}{'offset':>7}"
    f"{'ideal maha':>11}{'ideal knn':>10}{'fake maha':>10}{'fake knn':>9}"
)


@torch.no_grad()
def features_of(classifier: LoadedClassifier, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([classifier.forward_with_features(b)[1] for b in x.split(256)])


def accepted(prior: FeaturePrior, features: torch.Tensor, labels: torch.Tensor, name: str) -> float:
    rejected = prior.rejected(features, labels, [name])
    assert rejected is not None  # the prior was built from real features
    return 1.0 - float(rejected.float().mean())


def measure(name: str, per_class: int, seed: int) -> str:
    prepared = prepare(MEMBERS[name], seed=seed)
    classifier, data = prepared.classifier, prepared.data
    rows = classifier.class_directions()
    if rows is None:
        return f"{name:<14}  no feature layer before the logits"
    centred = F.normalize(rows - rows.mean(dim=0), dim=1)  # (K, d)
    generator_half, evaluation_half = split_reference(len(data.test_x))
    detectors = build_prior(classifier, data.test_x[evaluation_half], data.test_y[evaluation_half])
    real, real_y = features_of(classifier, data.test_x[generator_half]), data.test_y[generator_half]
    result = audit(
        classifier, InversionConfig(method="c3", seed=seed), samples_per_class=per_class,
        sample_seed=seed, device="cpu",
    )  # fmt: skip
    fake, fake_y = features_of(classifier, result.images), result.targets
    result.folder.cleanup()

    mean = real.mean(dim=0)
    present = real_y.unique()
    class_means = torch.stack([real[real_y == c].mean(dim=0) for c in present])
    align = F.cosine_similarity(class_means - mean, centred[present], dim=1).mean()
    own_real = F.cosine_similarity(real - mean, centred[real_y], dim=1).mean()
    own_fake = F.cosine_similarity(fake - fake.mean(dim=0), centred[fake_y], dim=1).mean()
    offset = (fake.mean(dim=0) - mean).norm() / mean.norm()
    radius = torch.zeros(len(rows))
    radius[present] = (class_means - mean).norm(dim=1)
    ideal = mean + radius[fake_y, None] * centred[fake_y]
    return (
        f"{name:<14}{align:>6.2f}{own_real:>9.2f}{own_fake:>9.2f}{offset:>7.2f}"
        f"{100 * accepted(detectors, ideal, fake_y, 'mahalanobis'):>10.0f}%"
        f"{100 * accepted(detectors, ideal, fake_y, 'knn'):>9.0f}%"
        f"{100 * accepted(detectors, fake, fake_y, 'mahalanobis'):>9.0f}%"
        f"{100 * accepted(detectors, fake, fake_y, 'knn'):>8.0f}%"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", default=DEFAULT_MEMBERS, help="comma-separated names")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start_engine_bench("bench/prototypes.py", args.threads)
    print(f"# plain c3, {args.per_class} counterfeits per class, seed {args.seed}\n", flush=True)
    print(HEADER, flush=True)
    for name in (m for m in args.members.split(",") if m):
        if name not in MEMBERS:
            raise SystemExit(f"unknown member {name!r}: {', '.join(MEMBERS)}")
        print(measure(name, args.per_class, args.seed), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
