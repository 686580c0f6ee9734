"""Detector-aware c3 (issue 15): the feature prior, its terms, its config and its audit."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from models.audit import AuditHooks, Reference, audit
from models.classifier import LoadedClassifier
from models.contracts.inversion import DETECTOR_WEIGHTS, InversionConfig, InversionParams
from models.feature_prior import build_prior, split_reference
from models.methods import build_method, build_method_from_state
from models.training import InversionFailed, load_state, train
from tests import factories


def test_the_reference_halves_are_disjoint_whole_and_seeded() -> None:
    generator_half, evaluation_half = split_reference(101, seed=3)
    assert len(generator_half) == 50
    assert len(evaluation_half) == 51
    assert sorted(torch.cat([generator_half, evaluation_half]).tolist()) == list(range(101))
    again = split_reference(101, seed=3)
    assert torch.equal(again[0], generator_half)
    assert not torch.equal(split_reference(101, seed=4)[0], generator_half)


def test_real_inputs_sit_mostly_inside_the_prior_and_noise_outside(
    classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = real
    prior = build_prior(classifier, x, y, quantile=0.8)
    assert prior.terms == ("mahalanobis", "knn")  # an MLP has no BatchNorm
    with torch.no_grad():
        _, real_features = classifier.forward_with_features(x)
        _, noise_features = classifier.forward_with_features(torch.rand(64, 1, 28, 28))
        real_m = prior.mahalanobis(real_features, y)
        noise_m = prior.mahalanobis(noise_features, y[:64])
        real_k, noise_k = prior.knn(real_features), prior.knn(noise_features)
    # the hinges are zero for the real inputs within the radius (80% of those it was built
    # on; a few more for k-NN, whose bank holds each of them itself), large for noise
    assert float((real_m == 0).float().mean()) == pytest.approx(0.8, abs=0.03)
    assert 0.8 <= float((real_k == 0).float().mean()) <= 0.9
    assert noise_m.mean() > 10 * real_m.mean()
    assert noise_k.mean() > 3 * real_k.mean()
    # what the closed loop watches: a detector at 95% TPR rejects about 5% of real inputs
    # each of those it was built on (k-NN a few fewer: the bank holds each of them itself), at
    # most 10% for either; noise all
    for name in ("mahalanobis", "knn"):
        rejected = prior.rejected(real_features, y, [name])
        assert rejected is not None
        assert 0.02 <= float(rejected.float().mean()) <= 0.06
    either = prior.rejected(real_features, y, ["mahalanobis", "knn"])
    assert either is not None
    assert 0.05 <= float(either.float().mean()) <= 0.10
    noise = prior.rejected(noise_features, y[:64], ["mahalanobis", "knn"])
    assert noise is not None
    assert float(noise.float().mean()) > 0.9


def test_the_prior_terms_pull_the_generator(
    classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor]
) -> None:
    config = InversionConfig.tiny("c3", recipe="paper", detectors=["mahalanobis", "knn"])
    method = build_method(classifier, config, "cpu")
    method.use_prior(build_prior(classifier, *real))
    losses = method.step(method.draw_labels())
    assert {"mahalanobis", "knn"} <= set(losses)
    assert losses["mahalanobis"] > 0  # an untrained generator's images are far from real ones
    plain = build_method(classifier, InversionConfig.tiny("c3", recipe="paper"), "cpu")
    assert not {"mahalanobis", "knn"} & set(plain.step(plain.draw_labels()))


def test_only_confident_samples_are_pulled_and_by_their_margin(
    classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor]
) -> None:
    config = InversionConfig.tiny("c3", recipe="paper", detectors=["knn"])
    method = build_method(classifier, config, "cpu")
    method.use_prior(build_prior(classifier, *real))
    features = torch.randn(4, 128) * 10  # far outside: every hinge is positive
    labels = torch.tensor([0, 1, 2, 3])
    hinge = method.prior.knn(features)  # type: ignore[union-attr]
    assert bool((hinge > 0).all())

    def total(confidence: list[float]) -> float:
        out, named = method._with_prior(
            torch.zeros(()), {}, features, labels, [], {"knn": 1.0}, torch.tensor(confidence)
        )
        assert named["knn"] == pytest.approx(float(hinge.mean()))  # reported whole
        return float(out)

    assert total([0.5, 0.9, 0.98, 0.99]) == 0.0  # at or below the threshold: no pull
    assert total([1.0, 1.0, 1.0, 1.0]) == pytest.approx(float(hinge.mean()), rel=1e-5)
    assert total([0.995, 0.0, 0.0, 0.0]) == pytest.approx(float(hinge[0]) * 0.5 / 4, rel=1e-4)


def test_batchnorm_statistics_are_a_prior_without_real_data() -> None:
    loaded = factories.loaded("resnet-small", (1, 28, 28))
    prior = build_prior(loaded)
    assert prior.terms == ("batch_stats",)
    batches = {
        "real": factories.digits((1, 28, 28)).train_x[:256],
        "grey": torch.full((128, 1, 28, 28), 0.5),
        "noise": torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0)),
    }
    measured = {}
    for name, images in batches.items():
        with torch.no_grad(), prior.batch_stats() as losses:
            loaded(images)
        measured[name] = float(torch.stack(losses).mean())
    # real batches match the statistics the classifier was trained on; others do not
    assert measured["grey"] > 3 * measured["real"]
    assert measured["noise"] > 2 * measured["real"]
    # nothing to score probes against: all count as rejected, the closed loop pulls up to 3x
    features = torch.randn(6, 64)
    rejected = prior.rejected(features, torch.arange(6), ["batch_stats"])
    assert rejected is not None
    assert bool(rejected.all())
    assert prior.rejected(features, torch.arange(6), ["knn"]) is None  # not this prior's term


def test_detectors_turn_on_their_terms_unless_the_request_sets_them() -> None:
    aware = InversionConfig(method="c3", detectors=("mahalanobis",))
    assert aware.loss_weights.mahalanobis == DETECTOR_WEIGHTS["mahalanobis"]["mahalanobis"] > 0
    assert aware.loss_weights.knn == 0.0
    assert aware.loss_weights.batch_stats > 0
    chosen = InversionConfig.model_validate(
        {"method": "c3", "detectors": ["knn"], "loss_weights": {"knn": 0.25}}
    )
    assert chosen.loss_weights.knn == 0.25
    assert chosen.loss_weights.spread == 1.0  # the adaptive preset's other weights stay
    assert InversionConfig(method="c3").loss_weights.mahalanobis == 0.0
    with pytest.raises(ValidationError, match="only c3 is detector-aware"):
        InversionConfig(method="pixel", detectors=("knn",))
    with pytest.raises(ValidationError):
        InversionParams.model_validate({"detectors": ["energy"]})
    params = InversionParams.model_validate({"detectors": ["mahalanobis", "knn"]})
    assert params.config("c3").detectors == ("mahalanobis", "knn")


def test_the_evasion_table_never_sees_the_generators_half(
    classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = real
    config = InversionConfig.tiny("c3", recipe="paper", detectors=["mahalanobis", "knn"])
    seen: set[str] = set()
    hooks = AuditHooks(on_progress=lambda p: seen.update(p.losses), progress_every_s=0.0)
    aware = audit(
        classifier, config, samples_per_class=3, reference=Reference(x, y), hooks=hooks,
        device="cpu",
    )  # fmt: skip
    assert aware.figures.ood is not None
    ood = aware.figures.ood
    assert ood.reference_fit + ood.reference_eval == len(split_reference(len(x), 0)[1]) == 100
    assert {"mahalanobis", "knn"} <= seen
    plain = audit(
        classifier,
        InversionConfig.tiny("c3", recipe="paper"),
        samples_per_class=3,
        reference=Reference(x, y),
        device="cpu",
    )
    assert plain.figures.ood is not None
    assert plain.figures.ood.reference_fit + plain.figures.ood.reference_eval == len(x)


def test_without_real_data_or_batchnorm_detector_aware_c3_says_what_it_needs(
    classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor]
) -> None:
    config = InversionConfig.tiny("c3", detectors=["knn"])
    with pytest.raises(InversionFailed, match="needs a reference set"):
        audit(classifier, config, samples_per_class=1, device="cpu")
    data_free = InversionConfig.tiny("c3", detectors=["knn"], prior_source="classifier")
    with pytest.raises(InversionFailed, match="with prior_source reference"):
        audit(classifier, data_free, samples_per_class=1, reference=Reference(*real), device="cpu")


def test_a_data_free_prior_ignores_the_reference_set_which_only_scores(
    real: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """prior_source "classifier": what an attacker without the team's data can do, scored on
    the same evaluation half as every other job on that reference set."""
    loaded = factories.loaded("resnet-small", (1, 28, 28))
    config = InversionConfig.tiny("c3", recipe="paper", detectors=["mahalanobis"],
                                  prior_source="classifier")  # fmt: skip
    seen: set[str] = set()
    hooks = AuditHooks(on_progress=lambda p: seen.update(p.losses), progress_every_s=0.0)
    result = audit(
        loaded, config, samples_per_class=2, reference=Reference(*real), hooks=hooks, device="cpu"
    )
    assert result.method.prior is not None
    assert result.method.prior.means is None
    assert "batch_stats" in seen
    assert "mahalanobis" not in seen
    held_out = result.figures.held_out_evasion
    assert held_out is not None
    assert held_out.reference_fit + held_out.reference_eval == len(split_reference(200)[1])
    for wrong in ({"prior_source": "classifier"}, {"prior_source": "classifier", "detectors": []}):
        with pytest.raises(ValidationError, match="only detector-aware c3 builds a prior"):
            InversionParams.model_validate(wrong)
        with pytest.raises(ValidationError, match="only detector-aware c3 builds a prior"):
            InversionConfig.model_validate({"method": "c3", **wrong})
    assert (
        InversionParams.model_validate({"detectors": ["knn"], "prior_source": "classifier"})
        .config("c3")
        .prior_source
        == "classifier"
    )


def test_a_resumed_detector_aware_run_rebuilds_its_prior_and_matches(
    classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor]
) -> None:
    config = InversionConfig.tiny("c3", recipe="paper", steps=4, detectors=["knn"])
    prior = build_prior(classifier, *real)
    straight = build_method(classifier, config, "cpu")
    straight.use_prior(prior)
    train(straight, steps=4)
    saved: dict[int, bytes] = {}
    first = build_method(classifier, config, "cpu")
    first.use_prior(prior)
    train(first, steps=2, checkpoint_every=2, on_checkpoint=lambda s, k: saved.__setitem__(k, s))
    resumed = build_method_from_state(classifier, load_state(saved[2]), "cpu")
    resumed.use_prior(build_prior(classifier, *real))
    train(resumed, steps=4)
    labels = torch.arange(10)
    assert torch.equal(resumed.sample(labels), straight.sample(labels))
